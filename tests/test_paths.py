"""Files and paths: what `fngen build` reads and writes, and what it refuses.

* An output that is the spec itself (the same path, a link, a hard link) is
  refused before anything is generated: the spec is the user's only copy.
* An existing output that is not a regular file (a FIFO, a device, a
  directory, a socket, a link to a file descriptor such as /dev/stdout) is
  refused and left as it is; standard output is ``-o -`` only.  A link to a
  regular file is written through, and stays a link.
* A spec that is not a regular file is refused before it is opened for
  reading (a FIFO would block, /dev/zero never end), and no more than the
  10 MiB limit plus one byte is ever read.
* The atomic replace leaves nothing behind: the temporary is removed on
  SIGINT, SIGTERM and SIGHUP; one left by a process killed outright is
  recognised by a later build (its name holds the host and the pid, and the
  pid is gone) and removed.

The library (`fngen.build`, `fngen.write_if_changed`, `fngen.load_spec`)
refuses the same cases with `OutputError` or `SpecError`.  Whatever could
hang (a FIFO) runs in a subprocess with a timeout, a guard against a hang,
not a measure of speed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import fngen
from fngen import OutputError, SpecError
import fngen.spec
import fngen.yamlnodes
from fngen import api
from fngen.cli import main
from fngen.yamlnodes import MAX_BYTES

ROOT = Path(__file__).resolve().parent.parent
SPEC = "fngen: 1\nfunctions:\n  square:\n    formula: y = x*x\n"
HANG_GUARD_S = 60


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ops.yaml").write_text(SPEC, encoding="utf-8")
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(main, list(args))


CLI_RUNS = """
    import json, sys
    from click.testing import CliRunner
    from fngen.cli import main
    results = []
    for args in json.loads(sys.argv[1]):
        result = CliRunner().invoke(main, args)
        results.append([result.exit_code, result.stdout, result.stderr])
    print(json.dumps(results))
"""


def cli_runs(runs: list[list[str]], cwd: Path) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each command line, run in another
    process with a timeout: a hang (a FIFO opened) fails the test."""
    # Its stdin is a pipe nobody writes to: reading /dev/stdin would block.
    read_end, write_end = os.pipe()
    try:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CLI_RUNS), json.dumps(runs)],
            cwd=cwd,
            stdin=read_end,
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_S,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    return [tuple(r) for r in json.loads(result.stdout)]


def assert_refused(result, message: str) -> None:
    """Exit 2 with one line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- the output is the spec ------------------------------------------------------


def spec_aliases(workdir: Path) -> dict[str, str]:
    (workdir / "link.yaml").symlink_to("ops.yaml")
    os.link(workdir / "ops.yaml", workdir / "hard.yaml")
    return {
        "same path": "ops.yaml",
        "another spelling": f"./sub/../{'ops.yaml'}",
        "absolute": str(workdir / "ops.yaml"),
        "symlink": "link.yaml",
        "hard link": "hard.yaml",
    }


@pytest.mark.parametrize("flags", [[], ["--check"], ["--diff"]])
def test_output_that_is_the_spec_is_refused(workdir, flags):
    (workdir / "sub").mkdir()
    for name, output in spec_aliases(workdir).items():
        result = run("build", "ops.yaml", "-o", output, *flags)
        assert_refused(result, "is the spec file ops.yaml itself")
        assert (workdir / "ops.yaml").read_text(encoding="utf-8") == SPEC, name
        assert (workdir / "link.yaml").is_symlink()
    assert listing(workdir) == ["hard.yaml", "link.yaml", "ops.yaml", "sub"]


def test_library_build_refuses_the_spec_as_output(workdir):
    (workdir / "sub").mkdir()
    for output in spec_aliases(workdir).values():
        with pytest.raises(OutputError, match="is the spec file"):
            fngen.build("ops.yaml", output)
        with pytest.raises(OutputError, match="is the spec file"):
            fngen.build("link.yaml", output)
    assert (workdir / "ops.yaml").read_text(encoding="utf-8") == SPEC


# -- outputs that are not regular files -----------------------------------------


def special_outputs(workdir: Path) -> dict[str, str]:
    """Existing outputs that are not regular files, by what they are."""
    os.mkfifo(workdir / "fifo.py")
    (workdir / "dir.py").mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(workdir / "sock.py"))
    server.close()
    (workdir / "fd.py").symlink_to("/proc/self/fd/1")
    (workdir / "null.py").symlink_to("/dev/null")
    return {
        "a FIFO": "fifo.py",
        "a directory": "dir.py",
        "the empty path (the current directory)": "",
        "the current directory": ".",
        "a socket": "sock.py",
        "a link to /proc/self/fd/1": "fd.py",
        "a link to /dev/null": "null.py",
        "a character device": "/dev/null",
        "/dev/stdout": "/dev/stdout",
        "/dev/fd/1": "/dev/fd/1",
        "/proc/self/fd/1": "/proc/self/fd/1",
    }


def kinds(workdir: Path) -> dict[str, tuple]:
    """What each entry is, to show that nothing was replaced."""
    result = {}
    for p in workdir.iterdir():
        info = p.lstat()
        link = os.readlink(p) if p.is_symlink() else None
        result[p.name] = (info.st_mode, info.st_ino, link)
    return result


@pytest.mark.parametrize("flags", [[], ["--check"], ["--diff"]])
def test_output_that_is_not_a_regular_file_is_refused(workdir, flags):
    outputs = special_outputs(workdir)
    before = kinds(workdir)
    runs = [["build", "ops.yaml", "-o", output, *flags] for output in outputs.values()]
    for what, (code, stdout, stderr) in zip(outputs, cli_runs(runs, workdir)):
        assert code == 2, (what, stderr)
        assert stdout == "", what
        assert stderr.count("\n") == 1, stderr
        assert "not a regular file" in stderr, (what, stderr)
    assert kinds(workdir) == before


def test_library_refuses_outputs_that_are_not_regular_files(workdir):
    outputs = special_outputs(workdir)
    before = kinds(workdir)
    for what, output in outputs.items():
        with pytest.raises(OutputError, match="not a regular file"):
            fngen.build("ops.yaml", output)
        with pytest.raises(OutputError, match="not a regular file"):
            api.write_if_changed(output, "text\n")
    assert kinds(workdir) == before


def test_stdout_is_dash_o_dash(workdir):
    result = run("build", "ops.yaml", "-o", "-")
    assert result.exit_code == 0
    assert result.stdout == fngen.generate("ops.yaml")
    assert listing(workdir) == ["ops.yaml"]


def test_a_link_to_a_regular_file_is_written_through(workdir):
    (workdir / "build").mkdir()
    (workdir / "build" / "real.py").write_text("old\n", encoding="utf-8")
    (workdir / "ops.py").symlink_to("build/real.py")
    (workdir / "new.py").symlink_to("build/missing.py")  # dangling: created
    for output, real in (("ops.py", "real.py"), ("new.py", "missing.py")):
        result = run("build", "ops.yaml", "-o", output)
        assert result.exit_code == 0, result.output
        assert (workdir / output).is_symlink()
        written = (workdir / "build" / real).read_text(encoding="utf-8")
        assert written == fngen.generate("ops.yaml")
        assert run("build", "ops.yaml", "-o", output, "--check").exit_code == 0
    assert listing(workdir / "build") == ["missing.py", "real.py"]


# -- specs that are not regular files ----------------------------------------------


def special_specs(workdir: Path) -> dict[str, str]:
    os.mkfifo(workdir / "fifo.yaml")
    (workdir / "dir.yaml").mkdir()
    (workdir / "zero.yaml").symlink_to("/dev/zero")
    return {
        "a FIFO": "fifo.yaml",
        "/dev/zero": "/dev/zero",
        "a link to /dev/zero": "zero.yaml",
        "/dev/stdin": "/dev/stdin",
    }


def test_spec_that_is_not_a_regular_file_is_refused(workdir):
    specs = special_specs(workdir)
    runs = []
    for spec in specs.values():
        runs += [["build", spec, "-o", "out.py"], ["check", spec], ["bench", spec]]
    results = iter(cli_runs(runs, workdir))
    for what, spec in specs.items():
        for _ in range(3):
            code, stdout, stderr = next(results)
            assert code == 2, (what, stderr)
            assert stdout == ""
            assert stderr.startswith(f"error: cannot read {spec}: it is "), stderr
            assert stderr.endswith(", not a regular file\n"), (what, stderr)
            assert stderr.count("\n") == 1
    assert not (workdir / "out.py").exists()


def test_library_load_spec_refuses_special_files(workdir):
    for what, spec in special_specs(workdir).items():
        if spec == "/dev/stdin":
            continue  # pytest's own stdin
        with pytest.raises(SpecError, match="not a regular file"):
            fngen.load_spec(spec)


def test_spec_reads_at_most_the_limit_plus_one_byte(workdir, monkeypatch):
    """A sparse file of a GiB: refused after MAX_BYTES + 1 bytes read."""
    big = workdir / "big.yaml"
    with open(big, "wb") as handle:
        handle.write(b"fngen: 1\n#")
        handle.truncate(1 << 30)
    read = []
    real_read = os.read

    def counting_read(fd, n):
        data = real_read(fd, n)
        read.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(SpecError) as error:
        fngen.load_spec(big)
    assert str(error.value) == (
        f"{big}:1:1: error: spec file is too large "
        f"({1 << 30} bytes, the limit is 10 MiB)"
    )
    assert 0 < sum(read) <= MAX_BYTES + 1


def test_spec_of_the_limit_is_read_and_one_byte_more_refused(workdir, monkeypatch):
    limit = len(SPEC) + 10
    monkeypatch.setattr(fngen.spec, "MAX_BYTES", limit)
    monkeypatch.setattr(fngen.yamlnodes, "MAX_BYTES", limit)
    (workdir / "full.yaml").write_text(SPEC + "#" * 9 + "\n", encoding="utf-8")
    assert [fn.name for fn in fngen.load_spec("full.yaml").functions] == ["square"]
    (workdir / "over.yaml").write_text(SPEC + "#" * 10 + "\n", encoding="utf-8")
    with pytest.raises(SpecError, match=f"too large \\({limit + 1} bytes"):
        fngen.load_spec("over.yaml")


# -- temporaries ----------------------------------------------------------------------


def test_a_build_leaves_only_its_output(workdir):
    assert run("build", "ops.yaml", "-o", "ops.py").exit_code == 0
    (workdir / "ops.yaml").write_text(SPEC.replace("x*x", "x*x*x"), encoding="utf-8")
    assert run("build", "ops.yaml", "-o", "ops.py").exit_code == 0
    assert listing(workdir) == ["ops.py", "ops.yaml"]


def test_a_long_output_name_builds(workdir):
    """The temporary's name fits the 255 bytes a file name may have."""
    name = "m" * 250 + ".py"
    assert run("build", "ops.yaml", "-o", name).exit_code == 0
    assert listing(workdir) == sorted([name, "ops.yaml"])


# A build whose rename is interrupted by a signal: os.replace (the last
# step, with the temporary complete) first sends the signal to the process.
INTERRUPTED = """
    import os, signal, sys
    signum = getattr(signal, sys.argv[1])
    real_replace = os.replace
    def replace(src, dst):
        os.kill(os.getpid(), signum)
        real_replace(src, dst)
    os.replace = replace
    from fngen.cli import main
    main(["build", "ops.yaml", "-o", "ops.py"])
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_during_the_write_removes_the_temporary(workdir, name):
    (workdir / "ops.py").write_text("# the old module\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INTERRUPTED), name],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    if name == "SIGINT":  # KeyboardInterrupt: click says "Aborted!"
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
    else:  # terminated by the signal itself, as without fngen's handler
        assert result.returncode == -getattr(signal, name), result.stderr
    assert listing(workdir) == ["ops.py", "ops.yaml"]
    assert (workdir / "ops.py").read_text(encoding="utf-8") == "# the old module\n"


KILLED = """
    import os, signal
    real_replace = os.replace
    def replace(src, dst):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from fngen.cli import main
    main(["build", "ops.yaml", "-o", "ops.py"])
"""


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_later_build_removes_what_a_killed_build_left(workdir):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED)],
        cwd=workdir,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == -signal.SIGKILL
    left = [n for n in listing(workdir) if n.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".ops.py.fngen-"), listing(workdir)
    assert (workdir / left[0]).read_bytes().startswith(b"# Generated by fngen")
    # Another output in the same directory: the stale temporary goes.
    assert run("build", "ops.yaml", "-o", "other.py").exit_code == 0
    assert listing(workdir) == ["ops.yaml", "other.py"]


def test_only_provably_stale_temporaries_are_removed(workdir):
    host = api._host()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = dead_pid()
        header = b"# Generated by fngen 0.1.0 from ops.yaml.\n"
        files = {
            f".a.py.fngen-{host}-{dead}-0123abcd.tmp": header,  # stale
            f".b.py.fngen-{host}-{dead}-0123abcd.tmp": b"",  # stale, empty
            f".c.py.fngen-{host}-{dead}-0123abcd.tmp": header[:5],  # stale, cut
            f".d.py.fngen-{host}-{sleeper.pid}-0123abcd.tmp": header,  # alive
            f".e.py.fngen-{host}-{dead}-0123abcd.tmp": b"user data\n",  # not ours
            f".f.py.fngen-otherhost-{dead}-0123abcd.tmp": header,  # elsewhere
            f".g.py.fngen-{host}-{dead}-0123abcd.tmp.bak": header,  # not the name
            f".h.py.{dead}.tmp": header,  # not the name
        }
        for name, data in files.items():
            (workdir / name).write_bytes(data)
        (workdir / f".i.py.fngen-{host}-{dead}-0123abcd.tmp").symlink_to("ops.yaml")
        removed = api.remove_stale_temporaries(workdir)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(removed) == sorted(list(files)[:3])
    assert all(not (workdir / name).exists() for name in removed)
    assert (workdir / "ops.yaml").read_text(encoding="utf-8") == SPEC
    assert len(listing(workdir)) == 1 + len(files) - 3 + 1
