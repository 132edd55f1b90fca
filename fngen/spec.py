"""Turn a parsed YAML document into the frozen data model, validating it.

Strict like torchgen's loader: unknown keys, wrong types and bad names are
errors located at the offending key or value.
"""

from __future__ import annotations

import ast
import dataclasses
import builtins
import difflib
import itertools
import math
import os
import re
import stat
import sys
from pathlib import Path

import sympy as sp

from fngen.errors import Location, SpecError, SpecWarning
from fngen.formula import FormulaParser, check_identifier
from fngen.functions import constant_value
from fngen.model import (
    DEFAULT_DOMAIN,
    CheckSpec,
    Formula,
    FunctionSpec,
    InitCall,
    InputKind,
    InputSpec,
    Spec,
)
from fngen.names import (
    DERIVED_SUFFIXES,
    class_name,
    dimension_names,
    generated_names,
    module_init_arguments,
)
from fngen.tensorops import (
    NORMALIZATIONS,
    REDUCTIONS,
    TensorLogSoftmax,
    TensorSoftmax,
    TensorGather,
    TensorLogSumExp,
    TensorMatmul,
    TensorMT,
    TensorOneHot,
)
from fngen.yamlnodes import MAX_BYTES, Node, load_yaml

# How an error names a tensor operation of the formula.
_OPERATION_NAMES = {
    **{op: f"{op.__name__.removeprefix('Tensor').lower()}()" for op in REDUCTIONS},
    TensorLogSumExp: "log(sum(exp()))",
    TensorMatmul: "'@'",
    TensorMT: "'.T'",
    TensorGather: "gather()",
    TensorSoftmax: "softmax()",
    TensorLogSoftmax: "log_softmax()",
}

FORMAT_VERSION = 1
# A function's wrapper and classes are globals of the generated module: of a
# builtin's name they would change what the module's code (and the code of
# whoever imports * from it) calls, as ``abs`` would for ``abs(c)``.
PYTHON_BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_"))
TOP_KEYS = ("fngen", "doc", "check", "export", "namespace", "kernels", "functions")
EXPORT_MODES = ("custom_op",)
KERNEL_MODES = ("triton", "none")
# ``save:`` of a function: what its backward reads (see derive.choose_save).
SAVE_MODES = ("memory", "speed")
FACTORY_ARGUMENTS = frozenset({"device", "dtype"})
# Namespaces of PyTorch's own operators: torch.library refuses them, or
# they would shadow them.
RESERVED_NAMESPACES = frozenset({"aten", "prim", "prims", "torch", "quantized", "onnx"})
FUNCTION_KEYS = (
    "doc",
    "formula",
    "inputs",
    "outputs",
    "grad",
    "check",
    "once_differentiable",
    "autocast",
    "module_args",
    "kernels",
    "save",
)
INPUT_KEYS = ("type", "default", "domain", "param", "init", "optional", "classes")
SPEC_CHECK_KEYS = ("device", "dtype")
FUNCTION_CHECK_KEYS = ("shapes", "atol", "rtol", "skip")
CHECK_NAMES = (
    "reference",
    "gradcheck",
    "double_backward",
    "forward_ad",
    "batched",
    "vmap",
    "compile",
    "float32",
)
# Run only for ``export: custom_op``, in a column of their own.
EXPORT_CHECKS = ("export",)
# Run only for a spec with ``kernels: triton`` (its own or a function's).
KERNEL_CHECKS = ("kernel",)
DTYPES = ("float64", "float32")
AUTOCAST_DTYPES = ("float32",)
INITS = {
    "zeros": (0, ()),
    "ones": (0, ()),
    "constant": (1, ()),
    "uniform": (2, ()),
    "normal": (2, ()),
    "kaiming_uniform": (0, ("a",)),
    "xavier_uniform": (0, ("gain",)),
}
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
# fullmatch: "cpu\n" is no device; [0-9]: nor is "cuda:\u0661" (\\d is any digit).
_DEVICE = re.compile(r"cpu|mps|cuda(:[0-9]+)?")


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate a spec file; raises `SpecError`.

    Only a regular file is read (a FIFO would block, ``/dev/zero`` never
    end), and at most `MAX_BYTES` + 1 bytes of it."""
    path = Path(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(None, f"cannot read {path}: {_not_regular(info)}")
        # Without blocking: a FIFO put there since the stat returns at once.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SpecError(None, f"cannot read {path}: {_not_regular(info)}")
            chunks, size = [], 0
            while size <= MAX_BYTES:
                chunk = os.read(fd, min(1 << 20, MAX_BYTES + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
    except OSError as err:
        raise SpecError(None, f"cannot read {path}: {err.strerror or err}") from None
    if size > MAX_BYTES:
        raise SpecError(
            Location(str(path), 1, 1),
            f"spec file is too large ({max(info.st_size, size)} bytes, "
            "the limit is 10 MiB)",
        )
    return parse_spec(b"".join(chunks), str(path))


def file_kind(mode: int) -> str:
    """What a file of `mode` is, in words (``a FIFO``)."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _not_regular(info: os.stat_result) -> str:
    return f"it is {file_kind(info.st_mode)}, not a regular file"


def parse_spec(text: str | bytes, filename: str = "ops.yaml") -> Spec:
    root = load_yaml(text, filename)
    mapping = _mapping(root, "the spec", TOP_KEYS)
    if "fngen" not in mapping:
        raise SpecError(
            root.location, "missing key 'fngen'", "the first line should be 'fngen: 1'"
        )
    version = mapping["fngen"]
    if type(version.value) is not int or version.value != FORMAT_VERSION:
        raise SpecError(
            version.location,
            f"unsupported format version {version.value!r}",
            "expected 1",
        )
    doc = _optional_str(mapping.get("doc"), "doc")
    device, dtype = None, None
    if "check" in mapping:
        check = _mapping(mapping["check"], "check", SPEC_CHECK_KEYS)
        if "device" in check:
            device = _str(check["device"], "device")
            if not _DEVICE.fullmatch(device):
                raise SpecError(
                    check["device"].location,
                    f"unknown device {device!r}",
                    "cpu, cuda, cuda:N or mps",
                )
        if "dtype" in check:
            dtype = _choice(check["dtype"], "dtype", DTYPES)
    export, namespace = _export(mapping)
    kernels = "none"
    if "kernels" in mapping:
        kernels = _choice(mapping["kernels"], "kernels", KERNEL_MODES)
    if "functions" not in mapping:
        raise SpecError(root.location, "missing key 'functions'")
    functions_node = mapping["functions"]
    functions = _mapping(functions_node, "functions", None)
    if not functions:
        raise SpecError(functions_node.location, "'functions' is empty")
    built = []
    warnings = []
    generated: dict[str, str] = {}
    for name, node in functions.items():
        location = functions_node.keys[name]
        builder = FunctionBuilder(name, node, location)
        fn = builder.build()
        warnings += builder.warnings
        for generated_name in generated_names(name):
            if generated_name in generated:
                raise SpecError(
                    location,
                    f"function '{name}' generates '{generated_name}', which function "
                    f"'{generated[generated_name]}' also generates",
                )
            generated[generated_name] = name
        built.append(fn)
    if export and "DECOMPOSITIONS" in generated:
        raise SpecError(
            functions_node.keys[generated["DECOMPOSITIONS"]],
            "function generates 'DECOMPOSITIONS', the name of the module's "
            "table of decompositions",
        )
    return Spec(
        filename,
        doc,
        tuple(built),
        device,
        dtype,
        tuple(warnings),
        export=export,
        namespace=namespace,
        kernels=kernels,
    )


def _export(mapping: dict[str, Node]) -> tuple[str | None, str | None]:
    """``export: custom_op`` and its ``namespace:``, the torch.library
    namespace of the ops (``torch.ops.<namespace>.<function>``)."""
    if "export" not in mapping:
        if "namespace" in mapping:
            raise SpecError(
                mapping["namespace"].location,
                "'namespace' needs 'export: custom_op'",
            )
        return None, None
    export = _choice(mapping["export"], "export mode", EXPORT_MODES)
    if "namespace" not in mapping:
        raise SpecError(
            mapping["export"].location,
            "'export: custom_op' needs 'namespace:'",
            "the torch.library namespace of the ops, as in torch.ops.my_ops.f",
        )
    node = mapping["namespace"]
    namespace = _str(node, "namespace")
    if not (namespace.isidentifier() and namespace.isascii()):
        raise SpecError(node.location, f"namespace '{namespace}' is not an identifier")
    if namespace in RESERVED_NAMESPACES or namespace.startswith("_"):
        raise SpecError(
            node.location,
            f"namespace '{namespace}' is PyTorch's own",
            "choose a name of your project's",
        )
    return export, namespace


class FunctionBuilder:
    """Validates one entry of `functions:` and builds its `FunctionSpec`."""

    def __init__(self, name: str, node: Node, location: Location):
        self.name = name
        self.node = node
        self.location = location
        self.warnings: list[SpecWarning] = []

    def build(self) -> FunctionSpec:
        name, location = self.name, self.location
        if not _SNAKE_CASE.match(name):
            raise SpecError(
                location, f"function name '{name}' is not a snake_case identifier"
            )
        for generated_name in generated_names(name):
            if generated_name in PYTHON_BUILTINS:
                raise SpecError(
                    location,
                    f"function name '{name}' would shadow Python's builtin "
                    f"'{generated_name}' in the generated module",
                    f"rename it, say '{name}_op'",
                )
        check_identifier(name, location, "function name")
        fields = _mapping(self.node, f"function '{name}'", FUNCTION_KEYS)
        if "formula" not in fields:
            raise SpecError(self.node.location, f"function '{name}' has no 'formula'")
        doc = _optional_str(fields.get("doc"), "doc")
        inputs = self._inputs(fields.get("inputs"))
        outputs = self._outputs(fields.get("outputs"))
        formula_node = fields["formula"]
        text = _str(formula_node, "formula")
        symbols = {i.name: _symbol(i) for i in inputs} if inputs is not None else None
        tensors = (
            {i.name for i in inputs if i.is_tensor} if inputs is not None else None
        )
        bools = {i.name for i in inputs or () if i.kind is InputKind.BOOL}
        longs = {i.name for i in inputs or () if i.kind is InputKind.LONG}
        parser = FormulaParser(
            formula_node.locate, symbols, tensors, bool_names=bools, long_names=longs
        )
        formula = parser.parse_statements(text, formula_node.location, outputs)
        declared = inputs is not None
        if inputs is None:
            inputs = tuple(
                InputSpec(n, InputKind.TENSOR, formula_node.location)
                for n in parser.symbols
            )
            symbols = dict(parser.symbols)
        self._check_names(formula, inputs, formula_node.location)
        grads = self._grads(fields.get("grad"), formula, parser, symbols, inputs)
        self._check_used(formula, grads, inputs, symbols, declared)
        for output, _ in formula.outputs:
            if output.name in symbols:
                raise SpecError(
                    formula_node.location, f"output '{output.name}' is also an input"
                )
        self._check_absent_operands(formula, inputs, symbols)
        if not any(i.is_differentiable and not i.optional for i in inputs):
            raise SpecError(
                formula_node.location,
                f"function '{name}' has no tensor input"
                + (" (a long input is not differentiated)" if longs else ""),
            )
        once = False
        if "once_differentiable" in fields:
            once = _bool(fields["once_differentiable"], "once_differentiable")
        autocast = None
        if "autocast" in fields:
            autocast = _choice(fields["autocast"], "autocast", AUTOCAST_DTYPES)
        check = self._check(fields.get("check"), inputs)
        module_args = self._module_args(fields.get("module_args"), inputs)
        kernels = None
        if "kernels" in fields:
            kernels = _choice(fields["kernels"], "kernels", KERNEL_MODES)
        save = None
        if "save" in fields:
            save = _choice(fields["save"], "save", SAVE_MODES)
        return FunctionSpec(
            name=name,
            location=location,
            doc=doc,
            formula=formula,
            inputs=tuple(inputs),
            symbols=tuple(symbols.items()),
            grads=tuple(grads.items()),
            check=check,
            once_differentiable=once,
            autocast=autocast,
            module_args=module_args,
            kernels=kernels,
            save=save,
        )

    @staticmethod
    def _module_args(node: Node | None, inputs) -> tuple[str, ...]:
        """``module_args: [in_features, out_features]``: the first arguments
        of the Module's __init__, in this order (the others follow, as
        without it)."""
        if node is None:
            return ()
        if not isinstance(node.value, list) or not node.value:
            raise SpecError(node.location, "module_args must be a list of names")
        takes = module_init_arguments(inputs)
        names = []
        for item in node.value:
            name = item.value
            if not isinstance(name, str) or name not in takes:
                raise SpecError(
                    item.location,
                    f"'{item.value}' is not an argument of the Module's __init__",
                    f"it takes {', '.join(takes)}" if takes else "it takes none",
                )
            if name in names:
                raise SpecError(item.location, f"'{name}' is listed twice")
            names.append(name)
        order = names + [n for n in takes if n not in names]
        defaults = [takes[n] for n in order]
        for name, has_default, before in zip(order[1:], defaults[1:], defaults):
            if before and not has_default:
                raise SpecError(
                    node.location,
                    f"'{name}' has no default but follows an argument with one",
                    "list the arguments without a default first",
                )
        return tuple(names)

    # -- inputs -------------------------------------------------------------

    def _inputs(self, node: Node | None) -> tuple[InputSpec, ...] | None:
        if node is None:
            return None
        entries = _mapping(node, "inputs", None)
        if not entries:
            raise SpecError(node.location, "'inputs' is empty")
        generated = set(generated_names(self.name))
        inputs = []
        self.inits: list[tuple[Node, str]] = []
        for name, value in entries.items():
            location = node.keys[name]
            check_identifier(name, location, "input name", attribute=True)
            if name in generated:
                raise SpecError(
                    location,
                    f"input '{name}' has the name of a generated class or function",
                )
            inputs.append(self._input(name, value, location))
        for n, spec in enumerate(inputs):
            later = [i for i in inputs[n + 1 :] if not (i.has_default or i.optional)]
            if spec.has_default and later:
                raise SpecError(
                    spec.location,
                    f"input '{spec.name}' has a default, but input '{later[0].name}' "
                    "declared after it has none",
                    "Python's rule for signatures: declare inputs with defaults last",
                )
        dims = dimension_names(inputs)
        by_name = {i.name: i for i in inputs}
        parsed = {}
        for init_node, name in self.inits:
            parsed[name] = parse_init(init_node.value, init_node.locate, dims)
            check_init(*parsed[name], by_name[name].param, init_node.location)
        inputs = [_with_init_call(spec, dims, parsed.get(spec.name)) for spec in inputs]
        names = {i.name for i in inputs}
        for dim in dims:
            if dim in names:
                raise SpecError(
                    node.location, f"dimension name '{dim}' is also an input name"
                )
        if any(i.is_param for i in inputs):
            # The Module takes them as torch.nn.Linear does (device="meta").
            for name in FACTORY_ARGUMENTS & (names | set(dims)):
                raise SpecError(
                    node.location,
                    f"'{name}' is the factory argument of the Module's __init__, "
                    "as in torch.nn.Linear(3, 4, device=..., dtype=...)",
                    "rename the input or dimension",
                )
        return tuple(inputs)

    def _input(self, name: str, node: Node, location: Location) -> InputSpec:
        if isinstance(node.value, str) or node.value is None:
            kind = _kind(node) if node.value is not None else InputKind.TENSOR
            if kind is InputKind.LONG:
                return self._long_input(name, {}, location)
            return InputSpec(name, kind, location)
        fields = _mapping(node, f"input '{name}'", INPUT_KEYS)
        param = fields.get("param")
        kind = _kind(fields["type"]) if "type" in fields else InputKind.TENSOR
        if param is not None and kind is not InputKind.TENSOR:
            raise SpecError(param.location, "a param must be a float tensor")
        if kind is InputKind.LONG:
            return self._long_input(name, fields, location)
        if "classes" in fields:
            raise SpecError(
                fields["classes"].location, "only long inputs take 'classes'"
            )
        spec = dict(name=name, kind=kind, location=location)
        if "default" in fields:
            if kind.is_tensor:
                raise SpecError(
                    fields["default"].location,
                    "only float, int and bool inputs take a default",
                )
            spec.update(default=_default(fields["default"], kind), has_default=True)
        if "domain" in fields:
            if not kind.is_tensor:
                raise SpecError(
                    fields["domain"].location, "only tensor inputs have a domain"
                )
            spec["domain"] = _domain(fields["domain"])
        if param is not None:
            spec["param"] = _dims(param)
            if not spec["param"]:
                raise SpecError(
                    param.location,
                    "a param needs at least one dimension",
                    "[1] for a single value",
                )
        if "init" in fields:
            if param is None:
                raise SpecError(fields["init"].location, "'init' needs 'param'")
            spec["init"] = _str(fields["init"], "init")
            self.inits.append((fields["init"], name))
        if "optional" in fields:
            optional = _bool(fields["optional"], "optional")
            if optional and not kind.is_tensor:
                raise SpecError(
                    fields["optional"].location, "only tensors can be optional"
                )
            spec["optional"] = optional
        return InputSpec(**spec)

    @staticmethod
    def _long_input(name: str, fields: dict[str, Node], location: Location):
        """A tensor of class indices: ``{type: long, classes: 10}``."""
        for key in ("default", "domain", "init", "optional"):
            if key in fields:
                raise SpecError(
                    fields[key].location,
                    f"a long input takes no '{key}'",
                    (
                        "'classes: n' says which values fngen check samples: 0 to n - 1"
                        if key == "domain"
                        else None
                    ),
                )
        if "classes" not in fields:
            raise SpecError(
                location,
                f"long input '{name}' needs 'classes: n'",
                "fngen check samples it in 0 .. n - 1, as class indices",
            )
        node = fields["classes"]
        classes = node.value
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise SpecError(node.location, "classes must be a positive integer")
        if classes >= 2**63:
            raise SpecError(node.location, "classes must be below 2**63")
        return InputSpec(name, InputKind.LONG, location, classes=classes)

    def _outputs(self, node: Node | None) -> list[str] | None:
        if node is None:
            return None
        if not isinstance(node.value, list) or not node.value:
            raise SpecError(
                node.location, "'outputs' must be a non-empty list of names"
            )
        names = []
        for item in node.value:
            name = _str(item, "output")
            check_identifier(name, item.location, "output name")
            if name in names:
                raise SpecError(item.location, f"output '{name}' is listed twice")
            names.append(name)
        return names

    @staticmethod
    def _check_absent_operands(formula, inputs, symbols) -> None:
        """An absent optional tensor counts as zero, also inside a reduction
        or a matrix product (``sum((x @ w + b)**2)``), but not where that
        leaves the operation no tensor to work on (``sum(x * b)``, ``b @ w``,
        ``sum(exp(b))``): the shape of its result is unknown."""
        optional = [
            spec
            for spec in inputs
            if spec.optional
            and any(symbols[spec.name] in op.expr.free_symbols for op in formula.ops)
        ]
        tensors = {symbols[spec.name] for spec in inputs if spec.is_tensor}
        tensors |= {op.result for op in formula.ops}
        # Every set of absent tensors is a variant of the generated code.
        for count in range(1, len(optional) + 1):
            for absent in itertools.combinations(optional, count):
                zero = {symbols[spec.name]: sp.Integer(0) for spec in absent}
                for op in formula.ops:
                    expr = op.expr
                    if isinstance(expr, TensorOneHot):
                        continue  # of a long input, never absent
                    operands = (
                        expr.args[:1]
                        if isinstance(
                            expr, (*REDUCTIONS, *NORMALIZATIONS, TensorGather)
                        )
                        else expr.args
                    )
                    if all(
                        arg.xreplace(zero).free_symbols & tensors for arg in operands
                    ):
                        continue
                    names = " and ".join(f"'{spec.name}'" for spec in absent)
                    raise SpecError(
                        op.location,
                        f"{_OPERATION_NAMES[type(expr)]} would have no tensor to work on "
                        f"when optional {names} is None",
                        "an absent tensor counts as zero: add it outside the "
                        "reduction or matrix product, or make it required",
                    )

    def _grads(
        self, node, formula: Formula, parser: FormulaParser, symbols, inputs
    ) -> dict[str, sp.Expr]:
        if node is None:
            return {}
        entries = _mapping(node, "grad", None)
        outputs = [out for out, _ in formula.outputs]
        extra = {}
        if len(outputs) == 1:
            extra["grad"] = sp.Symbol("grad", real=True)
        for out in outputs:
            extra[f"grad_{out.name}"] = sp.Symbol(
                "grad" if len(outputs) == 1 else f"grad_{out.name}", real=True
            )
        names = dict(parser.env)
        names.update({out.name: out for out in outputs})
        names.update(extra)
        tensors = {i.name for i in inputs if i.is_tensor}
        floats = {i.name for i in inputs if i.is_differentiable}
        grads = {}
        for name, value in entries.items():
            key_location = node.keys[name]
            if name not in symbols:
                raise SpecError(
                    key_location,
                    f"'{name}' is not an input",
                    _did_you_mean(name, list(symbols)),
                )
            if name not in floats:
                kind = "a float tensor" if name in tensors else "a tensor"
                raise SpecError(
                    key_location,
                    f"'{name}' is not {kind} input: its gradient is always None",
                )
            text = _str(value, "grad")
            expression = FormulaParser(
                value.locate, symbols, tensors, names
            ).parse_expression(text)
            if any(
                o.args
                for o in expression.atoms(sp.Function)
                if type(o).__module__ == "fngen.tensorops"
            ):
                raise SpecError(value.location, "a grad override must be pointwise")
            incoming = sorted({symbol.name for symbol in extra.values()})
            if expression != 0 and not {
                symbol.name for symbol in expression.free_symbols
            } & set(incoming):
                # A vector-Jacobian product is linear in the incoming
                # gradient; one that reads none breaks the chain rule.
                raise SpecError(
                    value.location,
                    f"the grad: override of '{name}' reads no incoming gradient "
                    f"({' or '.join(incoming)}): it is not a vector-Jacobian "
                    "product, and the gradient would ignore everything after "
                    f"'{self.name}'",
                    f"multiply by {incoming[0]}: '{name}: {incoming[0]} * (...)'",
                )
            grads[name] = expression
        return grads

    def _check_names(self, formula: Formula, inputs, location: Location) -> None:
        """Names the generated code derives from others (``x_t``, ``x_shape``,
        ``grad_x`` ...) and generated globals must not be taken already."""
        generated = set(generated_names(self.name))
        base = (
            [i.name for i in inputs]
            + [o.name for o, _ in formula.outputs]
            + [op.result.name for op in formula.ops]
        )
        derived = {}
        for name in base:
            for suffix in DERIVED_SUFFIXES:
                derived[name + suffix] = name
        names = (
            [i.name for i in inputs]
            + [name for name, _ in formula.statements]
            + [op.result.name for op in formula.ops]
        )
        for name in names:
            if name in generated:
                raise SpecError(
                    location,
                    f"'{name}' is also the name of a generated class or function",
                )
            if name in derived:
                raise SpecError(
                    location,
                    f"'{name}' collides with the name the generated code derives from '{derived[name]}'",
                )

    def _check_used(
        self, formula: Formula, grads, inputs, symbols, declared: bool
    ) -> None:
        """A declared input the formula does not read is a warning; a name
        of the formula that constant folding removed (``where(sin(pi**2) >=
        1, y, 7)``) is an error, as it was never declared to be kept."""
        used = set()
        for _, expr in formula.outputs:
            used |= expr.free_symbols
        for op in formula.ops:
            used |= op.expr.free_symbols
        for expr in grads.values():
            used |= expr.free_symbols
        for spec in inputs:
            if symbols[spec.name] in used:
                continue
            message = f"input '{spec.name}' is not used by the formula"
            if not declared:
                raise SpecError(spec.location, message)
            # Kept, as an API may take an argument it ignores (norse's
            # SuperSpike takes alpha); its gradient is None.
            self.warnings.append(
                SpecWarning(
                    spec.location,
                    f"{message} (it is accepted and ignored; its gradient is None)",
                )
            )

    def _check(self, node: Node | None, inputs) -> CheckSpec:
        if node is None:
            return CheckSpec()
        fields = _mapping(node, "check", FUNCTION_CHECK_KEYS)
        shapes = []
        tensors = {i.name for i in inputs if i.is_tensor}
        if "shapes" in fields:
            for name, value in _mapping(fields["shapes"], "shapes", None).items():
                if name not in tensors:
                    raise SpecError(
                        fields["shapes"].keys[name], f"'{name}' is not a tensor input"
                    )
                shape = _dims(value)
                if not all(isinstance(d, int) for d in shape):
                    raise SpecError(value.location, "check shapes must be integers")
                shapes.append((name, shape))
        tolerances = {}
        for key in ("atol", "rtol"):
            if key in fields:
                tolerances[key] = _positive(fields[key], key)
        skips = []
        if "skip" in fields:
            for name, reason in _mapping(
                fields["skip"], "skip", CHECK_NAMES + EXPORT_CHECKS + KERNEL_CHECKS
            ).items():
                skips.append((name, _str(reason, "skip reason")))
        return CheckSpec(
            tuple(shapes), tolerances.get("atol"), tolerances.get("rtol"), tuple(skips)
        )


# -- small validators ----------------------------------------------------


def _mapping(node: Node, what: str, allowed: tuple[str, ...] | None) -> dict[str, Node]:
    if not isinstance(node.value, dict):
        raise SpecError(node.location, f"{what} must be a mapping")
    if allowed is not None:
        for key in node.value:
            if key not in allowed:
                raise SpecError(
                    node.keys[key],
                    f"unknown key '{key}' in {what}",
                    _did_you_mean(key, list(allowed))
                    or f"expected one of: {', '.join(allowed)}",
                )
    return node.value


def _str(node: Node, what: str) -> str:
    if not isinstance(node.value, str):
        raise SpecError(node.location, f"{what} must be a string")
    return node.value


def _optional_str(node: Node | None, what: str) -> str | None:
    return None if node is None else _str(node, what)


def _bool(node: Node, what: str) -> bool:
    if not isinstance(node.value, bool):
        raise SpecError(node.location, f"{what} must be true or false")
    return node.value


def _number(node: Node, what: str) -> float:
    value = node.value
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
    ):
        raise SpecError(node.location, f"{what} must be a finite number")
    return float(value)


def _positive(node: Node, what: str) -> float:
    value = _number(node, what)
    if value <= 0:
        raise SpecError(node.location, f"{what} must be positive")
    return value


def _choice(node: Node, what: str, choices) -> str:
    value = _str(node, what)
    if value not in choices:
        raise SpecError(
            node.location,
            f"unknown {what} '{value}'",
            f"expected one of: {', '.join(choices)}",
        )
    return value


def _kind(node: Node) -> InputKind:
    value = _str(node, "input type")
    try:
        return InputKind(value)
    except ValueError:
        choices = [k.value for k in InputKind]
        raise SpecError(
            node.location,
            f"unknown input type '{value}'",
            _did_you_mean(value, choices) or f"expected one of: {', '.join(choices)}",
        ) from None


def _default(node: Node, kind: InputKind):
    value = node.value
    if kind is InputKind.BOOL:
        return _bool(node, "default")
    if kind is InputKind.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(node.location, "default must be an int")
        return value
    return _number(node, "default")


def _domain(node: Node) -> tuple[float, float]:
    if not isinstance(node.value, list) or len(node.value) != 2:
        raise SpecError(node.location, "domain must be a list [lo, hi]")
    lo, hi = (_number(n, "domain bound") for n in node.value)
    if not lo < hi:
        raise SpecError(node.location, "domain must have lo < hi")
    return (lo, hi)


def _dims(node: Node) -> tuple[int | str, ...]:
    if not isinstance(node.value, list):
        raise SpecError(node.location, "a shape must be a list of sizes")
    dims = []
    for item in node.value:
        value = item.value
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise SpecError(item.location, "a size must not be negative")
            if value >= 2**63:
                raise SpecError(item.location, "a size must be below 2**63")
            dims.append(value)
        elif isinstance(value, str):
            check_identifier(value, item.location, "dimension name", attribute=True)
            dims.append(value)
        else:
            raise SpecError(item.location, "a size must be an integer or a name")
    return tuple(dims)


def parse_init(
    text: str, locate, dim_names
) -> tuple[str, list[sp.Expr], dict[str, sp.Expr]]:
    """(initialiser, positional args, keyword args) of an init string such as
    ``uniform(-1/sqrt(in_features), 1/sqrt(in_features))``."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        raise SpecError(
            locate(0, 0),
            f"invalid init '{text}'",
            f"expected one of: {', '.join(INITS)}",
        ) from None
    name = (
        tree.id
        if isinstance(tree, ast.Name)
        else getattr(tree.func, "id", None) if isinstance(tree, ast.Call) else None
    )
    if name not in INITS:
        raise SpecError(
            locate(0, 0),
            f"unknown init '{text}'",
            _did_you_mean(str(name), list(INITS))
            or f"expected one of: {', '.join(INITS)}",
        )
    arity, keywords = INITS[name]
    args = tree.args if isinstance(tree, ast.Call) else []
    kwargs = tree.keywords if isinstance(tree, ast.Call) else []
    if len(args) != arity or any(k.arg not in keywords for k in kwargs):
        raise SpecError(
            locate(0, 0),
            f"init {name}() takes {arity} argument(s)"
            + (f" and {', '.join(k + '=' for k in keywords)}" if keywords else ""),
        )
    symbols = {d: sp.Symbol(d, integer=True, positive=True) for d in dim_names}
    parser = FormulaParser(locate, symbols, set())

    def number(arg):
        expr = parser.parse_expression(ast.unparse(arg))
        if not expr.free_symbols:
            value = constant_value(expr)
            if value is None or not math.isfinite(float(value)):
                raise SpecError(
                    locate(0, 0),
                    f"init argument {ast.unparse(arg)} is not a finite float",
                    f"the largest float is {sys.float_info.max:.6g}",
                )
        return expr

    return name, [number(a) for a in args], {k.arg: number(k.value) for k in kwargs}


def default_init(shape) -> str:
    """torch.nn.Linear's initialiser for a matrix, zeros for a vector."""
    return "kaiming_uniform(a=sqrt(5))" if len(shape) >= 2 else "zeros"


def _with_init_call(spec: InputSpec, dims, parsed=None) -> InputSpec:
    """`spec` with its initialiser (`parsed` where the spec gave one, the
    default else), where it is a param."""
    if not spec.is_param:
        return spec
    if parsed is None:
        locate = lambda line, col: spec.location  # noqa: E731
        parsed = parse_init(default_init(spec.param), locate, dims)
    name, args, kwargs = parsed
    call = InitCall(name, tuple(args), tuple(kwargs.items()))
    return dataclasses.replace(spec, init_call=call)


def check_init(name: str, args, kwargs, shape, location: Location) -> None:
    """Refuse an init that torch.nn.init would refuse when the Module is
    made: ``uniform(a, b)`` with b < a, ``normal(mean, std)`` with std < 0,
    a negative xavier gain, and kaiming and xavier on fewer than 2
    dimensions (no fan in and fan out).  Arguments that are expressions of
    dimension names are checked as far as their signs are known."""
    if name in ("kaiming_uniform", "xavier_uniform") and len(shape) < 2:
        raise SpecError(
            location,
            f"init {name} needs a param of at least 2 dimensions, "
            f"this one has {len(shape)}",
            "torch.nn.init computes its fan in and fan out",
        )
    if name == "uniform" and (args[1] - args[0]).is_negative:
        raise SpecError(
            location,
            f"init uniform(a, b) needs a <= b, got a = {args[0]}, b = {args[1]}",
        )
    if name == "normal" and args[1].is_negative:
        raise SpecError(
            location, f"init normal(mean, std) needs std >= 0, got std = {args[1]}"
        )
    if name == "xavier_uniform" and "gain" in kwargs and kwargs["gain"].is_negative:
        raise SpecError(
            location, f"init xavier_uniform needs gain >= 0, got {kwargs['gain']}"
        )


def _symbol(spec: InputSpec) -> sp.Symbol:
    if spec.kind in (InputKind.INT, InputKind.LONG):
        return sp.Symbol(spec.name, integer=True)
    return sp.Symbol(spec.name, real=True)


def _did_you_mean(name: str, candidates: list[str]) -> str | None:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f"did you mean '{close[0]}'?" if close else None


__all__ = ["load_spec", "parse_spec", "class_name", "generated_names", "DEFAULT_DOMAIN"]
