"""jsonargparse's parse errors as the project's one line: ``<key>: expected <what>, got <value>``.

jsonargparse (under LightningCLI) reports a bad value as an indented tree: ``Parser key "data":``,
``Does not validate against any of the Union subtypes``, the subtypes, one error per subtype, a
``Problem with given class_path`` block for the data module's own keys, the given value twice. Its
exception carries only that text, so the text is read here: the innermost key, what the subtypes
expect (in words) and the value given. Unknown keys name the closest accepted key; a config file
that is missing, not YAML or not a mapping is named with the YAML reader's own reason.
:class:`~vmunet.training.cli.VMUNetCLI` raises the result as a :class:`~vmunet.errors.ConfigError`,
which ``vmunet`` prints like every other user error.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from vmunet.runtime import misplaced_verbose_hint

_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$', re.S)
_EXPECTED_GOT = re.compile(r"^Expected an? (.+?)\. Got value: (.*)$", re.S)
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)':\n")
_NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted")
_SUBCOMMAND_OPTION = re.compile(r"^Subcommand '\w+' does not accept option '([^']+)'")
_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)$", re.S)
_NONFINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity",
              ".nan", ".inf", "+.inf", "-.inf"}
_WORDS = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false", "NoneType": "null",
          "dict": "a mapping", "list": "a list", "tuple": "a list", "Path": "a path"}
_PLURAL = {"int": "integers", "float": "numbers", "str": "strings", "bool": "true/false values"}


def _split_top(text: str) -> list[str]:
    """``"A, B[C, D]"`` -> ``["A", "B[C, D]"]``: commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _bare(name: str) -> str:
    """``<class 'pathlib.Path'>`` -> ``Path``, ``collections.abc.Iterable[x.Logger]`` -> ``Iterable[x.Logger]``."""
    name = re.sub(r"^<class '([^']+)'>$", r"\1", name.strip())
    dotted = re.match(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*(?:\[.*)?)$", name, re.S)
    return dotted.group(1) if dotted else name


def type_words(name: str) -> str:
    """A jsonargparse type name in words: ``<class 'int'>`` -> "an integer", ``tuple[int, int]`` ->
    "a list of 2 integers", ``typing.Literal['a', 'b']`` -> "one of a, b"."""
    name = _bare(name)
    generic = re.match(r"^(\w+)\[(.*)\]$", name, re.S)
    if generic:
        outer, args = generic.group(1), [_bare(a) for a in _split_top(generic.group(2))]
        if outer == "Literal":
            return "one of " + ", ".join(a.strip("'\"") for a in args)
        if outer in ("list", "List", "Sequence", "Iterable", "tuple", "Tuple") and args:
            if outer.lower() == "tuple" and "..." not in args:
                kind = _PLURAL.get(args[0], "values") if len(set(args)) == 1 else "values"
                return f"a list of {len(args)} {kind}"
            return f"a list of {_PLURAL.get(args[0], args[0] + 's')}"
        if outer in ("Optional",):
            return f"{type_words(args[0])} or null"
        if outer in ("Union",):
            return " or ".join(type_words(a) for a in args)
        return f"a {outer}"
    tuple_n = re.match(r"^tuple with (\d+) elements$", name)
    if tuple_n:
        return f"a list of {tuple_n.group(1)} values"
    return _WORDS.get(name, f"a {name}")


def _expectation(names: Iterable[str], got: str) -> str:
    """The subtypes of a Union in words, read as one list: the choices of every ``Literal`` (and
    ``bool``'s true/false) merged into one "one of ...", an integer beside a number said once, null
    last (``precision``: "one of 64, 32, 16, 16-mixed, ... or null", not three "one of" lists)."""
    words: list[str] = []
    choices: list[str] = []
    nullable = False
    for name in names:
        bare = _bare(name)
        literal = re.match(r"^Literal\[(.*)\]$", bare, re.S)
        if literal:
            values = [_bare(a).strip("'\"") for a in _split_top(literal.group(1))]
        elif bare == "bool":
            values = ["true", "false"]
        elif bare == "NoneType":
            nullable = True
            continue
        else:
            word = type_words(name)
            if word == "a number" and got.strip().lower() in _NONFINITE:
                word = "a finite number"  # jsonargparse refuses "nan"/"inf" for a float: say why
            if word not in words:
                words.append(word)
            continue
        choices += [v for v in values if v not in choices]
    if "an integer" in words and ("a number" in words or "a finite number" in words):
        words.remove("an integer")  # a number includes the integers
    if choices == ["true", "false"]:
        words.append("true or false")
    elif len(choices) == 1:
        words.append(choices[0])
    elif choices:
        words.append("one of " + ", ".join(choices))
    if nullable:
        words.append("null")
    return " or ".join(words)


def _block_after(text: str, start: int) -> str:
    """The indented lines after ``text[:start]`` (a block under a ``- Problem ...:`` line)."""
    lines = text[start:].splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip()) if lines else 0
    block = []
    for line in lines:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return "\n".join(block).strip()


# keys other libraries name differently, which no spelling distance finds (learning_rate -> lr)
_SYNONYMS = {"learning_rate": "lr"}


def _closest(name: str, candidates: Iterable[str]) -> str:
    """The accepted key nearest to ``name``: among the keys of the same section (``model.``) by the
    last part alone, since the shared prefix made ``model.learning_rate`` look like ``model.weights``;
    by the whole name when the section itself is unknown."""
    candidates = list(candidates)
    parent, _, leaf = name.rpartition(".")
    siblings = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == parent}
    if siblings:
        synonym = _SYNONYMS.get(leaf)
        near = [synonym] if synonym in siblings else difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
        match = [siblings[n] for n in near]
    else:
        match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _class_keys(class_path: str) -> list[str]:
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # only for a suggestion: an unimportable class gets none
        return []


def _unknown(key: str, candidates: Iterable[str], command: str) -> str:
    return f"{key}: unknown key{_closest(key, candidates)} (`vmunet {command} --help` lists the accepted keys)"


def _describe(text: str, prefix: str, command: str) -> str | None:
    """One line for one ``Parser key "K": ...`` message (nested ones are read recursively)."""
    text = text.strip()
    keyed = _KEY.match(text)
    key = prefix
    if keyed:
        key = f"{prefix}.{keyed.group(1)}" if prefix else keyed.group(1)
        text = keyed.group(2).strip()
    problem = _CLASS_PATH.search(text)
    if problem:  # the data module's own keys, one level down
        class_path = problem.group(1)
        inner = _block_after(text, problem.end())
        unknown = _NOT_ACCEPTED.match(inner)
        if unknown:
            return _unknown(f"{key}.{unknown.group(1)}", [f"{key}.{k}" for k in _class_keys(class_path)], command)
        if _KEY.match(inner):
            return _describe(inner, key, command)
        return f"{key}: cannot use class_path {class_path} ({' '.join(inner.split())})"
    got = re.search(r"^\s*Given value: (.*)$", text, re.M)
    subtypes = re.search(r"^\s*Subtypes: \[(.*)\]$", text, re.M)
    if subtypes and got:
        return f"{key}: expected {_expectation(_split_top(subtypes.group(1)), got.group(1))}, got {got.group(1).strip()}"
    plain = _EXPECTED_GOT.match(text)
    if plain:
        value = plain.group(2).strip()
        return f"{key}: expected {_expectation([plain.group(1)], value)}, got {value}"
    missing = re.match(r"^File does not exist: '(.*)'$", text)
    if missing:
        return f"{key}: expected an existing YAML file, got {missing.group(1)} (no such file)"
    if keyed:
        return f"{key}: {' '.join(text.split())}"
    return None


def _config_files(argv: Sequence[str]) -> list[str]:
    files = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _bad_config_file(argv: Sequence[str]) -> str | None:
    """``config: ...`` for the first ``--config`` file that is not a YAML mapping, with YAML's reason."""
    for name in _config_files(argv):
        path = Path(name)
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            return f"config: expected a readable YAML file, got {name} ({err})"
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            reason = getattr(err, "problem", None) or str(err).splitlines()[0]
            return f"config: expected a valid YAML file, got {name}: {reason}{where}"
        if data is not None and not isinstance(data, dict):
            return f"config: expected a YAML mapping (trainer:, model:, data:, ...), got {name} holding a {type(data).__name__}"
    return None


def parse_error_line(message: str, argv: Sequence[str], keys: Sequence[str] = ()) -> str:
    """jsonargparse's parse error ``message`` for ``argv`` as one line; ``keys``: the accepted keys
    of the subcommand (``model.lr``, ...), for "did you mean"."""
    message = message.strip()
    if message.startswith(("Problems parsing config", "Unexpected config")):
        found = _bad_config_file(argv)
        if found:
            return found
    command = argv[0] if argv else "fit"
    unknown = _SUBCOMMAND_OPTION.match(message)
    if unknown:
        return _unknown(unknown.group(1), keys, command)
    unrecognized = _UNRECOGNIZED.match(message)
    if unrecognized:
        hint = misplaced_verbose_hint(unrecognized.group(1), command)
        if hint:
            return f"unrecognized arguments: {unrecognized.group(1).strip()}{hint}"
        options = [a for a in unrecognized.group(1).split() if a.startswith("--")]
        if len(options) == 1:
            name = options[0][2:].split("=", 1)[0]
            return _unknown(name, keys, command)
    required = re.match(r"^the following arguments are required: (.*)$", message)
    if required:  # jsonargparse names them "fit.data": the keys as a config states them
        keys_given = ", ".join(k.strip().removeprefix(f"{command}.") for k in required.group(1).split(","))
        return (f"{keys_given}: required, not given (e.g. --config experiments/demo.yaml; "
                f"`vmunet {command} --help` lists the accepted keys)")
    described = _describe(message, "", command)
    return described if described is not None else " ".join(message.split())


# What Lightning's Trainer accepts for the keys whose refusals come from the Trainer itself, not
# from the parser (a Union with ``str`` lets "abc" through parsing: ``devices``, ``accelerator``, ...).
_TRAINER_EXPECTED = {
    "accelerator": "one of auto, {accelerators} (or an Accelerator)",
    "devices": "a positive integer, auto, -1 (all) or a list of GPU indices",
    "strategy": "a strategy name such as auto, ddp, ddp_spawn, fsdp (or a Strategy)",
    "max_time": "a duration DD:HH:MM:SS (e.g. 00:12:00:00) or a mapping such as {hours: 12}",
    "val_check_interval": "an integer (batches), a fraction of the epoch in [0, 1] or a time DD:HH:MM:SS",
    "limit_train_batches": "an integer (batches) or a fraction in [0, 1]",
    "limit_val_batches": "an integer (batches) or a fraction in [0, 1]",
    "limit_test_batches": "an integer (batches) or a fraction in [0, 1]",
    "limit_predict_batches": "an integer (batches) or a fraction in [0, 1]",
    "overfit_batches": "an integer (batches) or a fraction in [0, 1]",
    "profiler": "one of simple, advanced, pytorch, xla (or a Profiler) or null",
    "gradient_clip_algorithm": "one of value, norm",
    "num_nodes": "a positive integer",
    "max_steps": "an integer >= 0 or -1 (no limit)",
    "reload_dataloaders_every_n_epochs": "an integer >= 0",
}


def _trainer_keys() -> list[str]:
    from lightning.pytorch import Trainer  # only here: the parse-error path above never needs it

    return [p for p in inspect.signature(Trainer).parameters if p != "self"]


def _show(value: object) -> str:
    """The value as the user wrote it: text as is, lists / numbers in YAML flow style, objects by repr."""
    if isinstance(value, str):
        return value
    try:
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
    except yaml.YAMLError:  # an object given from Python (an Accelerator instance, ...)
        return repr(value)


def trainer_error_line(message: str, config: dict[str, object]) -> str | None:
    """Lightning's refusal of a Trainer setting as ``trainer.<key>: expected ..., got <value>``.

    ``config``: the trainer settings as given. The key is the first Trainer argument the message
    names (``devices`` in "`devices` selected with `CPUAccelerator` should be an int > 0."); two
    messages name none and are mapped here. None when no key is found (not a setting's error).
    """
    if message.startswith("`Timer(duration="):
        key = "max_time"
    elif message.startswith("No supported gpu backend found"):
        key = "accelerator"
    else:
        found = [(m.start(), k) for k in _trainer_keys()
                 if (m := re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", message))]
        if not found:
            return None
        key = min(found)[1]
    what = _TRAINER_EXPECTED.get(key)
    if what is None:
        return f"trainer.{key}: {' '.join(message.split())}"
    if key == "accelerator":
        from lightning.pytorch.accelerators import AcceleratorRegistry

        names = sorted(AcceleratorRegistry.available_accelerators())
        what = what.format(accelerators=", ".join(names))
        if message.startswith("No supported gpu backend found"):
            here = [n for n in names if AcceleratorRegistry[n]["accelerator"].is_available()]
            what = f"an accelerator this machine has (here: auto, {', '.join(here)})"
    elif key == "devices" and re.search(r"CPUAccelerator|cpu accelerator", message):
        what = "a positive integer (processes) or auto on the cpu accelerator"
    return f"trainer.{key}: expected {what}, got {_show(config.get(key))}"
