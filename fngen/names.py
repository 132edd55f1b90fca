"""The names of generated code, in one place.

A function ``layer_norm`` becomes ``LayerNormFunction`` (the autograd
Function), ``layer_norm`` (the functional wrapper) and ``LayerNorm`` (the
Module).  Inside a Function, a name ``x`` (an input, an output or a
tensor op's result) brings along the names derived from it:

=================  ==========================================================
``grad_x``         the gradient of x (``grad`` alone: that of a lone output)
``needs_x``        ``ctx.needs_input_grad`` of input x
``x_t``            the tangent of x in the jvp
``ctx.x_shape``    x's shape, kept where only the shape is needed
``ctx.x_is_none``  whether the optional tensor x was None
=================  ==========================================================

The spec refuses a name that collides with one of these (`DERIVED_SUFFIXES`,
`RESERVED_PREFIXES`).
"""

from __future__ import annotations

# Names a spec may not take: they are derived from others.
DERIVED_SUFFIXES = ("_t", "_shape", "_is_none")
RESERVED_PREFIXES = ("_", "grad_", "needs_")


def class_name(name: str) -> str:
    """``layer_norm`` -> ``LayerNorm``."""
    return "".join(part.capitalize() for part in name.split("_"))


def generated_names(name: str) -> tuple[str, str, str]:
    """The Function class, the functional wrapper and the Module."""
    return (f"{class_name(name)}Function", name, class_name(name))


def function_class(name: str) -> str:
    return generated_names(name)[0]


def traceable_class(name: str) -> str:
    """The class ``torch.compile`` applies (see `codegen.traceable`), and
    `traced_class` the one ``torch.jit.trace`` and ``torch.jit.script`` do."""
    return f"_{class_name(name)}Traceable"


def traced_class(name: str) -> str:
    return f"_{class_name(name)}Traced"


def kernel_names(name: str) -> tuple[str, str]:
    """The launchers of function `name`'s Triton kernels, forward and
    backward; each kernel is its launcher's name and ``_kernel``."""
    return f"_{name}_fwd", f"_{name}_bwd"


def grad(name: str) -> str:
    return f"grad_{name}"


def needs(name: str) -> str:
    return f"needs_{name}"


def ctx_shape(name: str) -> str:
    return f"ctx.{name}_shape"


def ctx_is_none(name: str) -> str:
    return f"ctx.{name}_is_none"


def dimension_names(inputs) -> list[str]:
    """The named dimensions of the params, in order of first appearance."""
    names: list[str] = []
    for spec in inputs:
        for dim in spec.param or ():
            if isinstance(dim, str) and dim not in names:
                names.append(dim)
    return names


def module_init_arguments(inputs) -> dict[str, bool]:
    """The arguments of a function's Module's __init__ (before ``device``
    and ``dtype``) in their default order, each to whether it has a default:
    the dimension names, the non-tensor inputs (those without a default
    first), the flags of optional params."""
    takes = {d: False for d in dimension_names(inputs)}
    scalars = [i for i in inputs if not i.is_tensor]
    for spec in sorted(scalars, key=lambda i: i.has_default):
        takes[spec.name] = spec.has_default
    for spec in inputs:
        if spec.is_param and spec.optional:
            takes[spec.name] = True
    return takes
