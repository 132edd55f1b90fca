"""Jinja2 templates of fngen, shipped inside the wheel as fngen.templates."""
