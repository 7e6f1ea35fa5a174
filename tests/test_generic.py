"""The faces read only the contract: no face names a field, flag, enum, value or data file of the pipeline in model.py.

The names come from model.py itself (its schemas, enums, constants) and recipe.py (its data files), so after a fork
this test checks the fork's names. A face may still hold such a word in prose (a docstring, a help text): what it must
not do is read it, as a string that is exactly the name, an attribute, or a variable of model.py's.
"""

import ast
import typing
from enum import Enum
from pathlib import Path

import pydantic
import pytest
from pydantic import BaseModel

import model
import recipe
from building import contract

pytestmark = pytest.mark.quick  # a second or so: in the fast check

ROOT = model.ROOT
FACES = [
    *sorted((ROOT / "app").glob("*.py")),
    ROOT / "batch.py",
    *sorted((ROOT / "reporting").glob("*.py")),
    *sorted((ROOT / "loop").glob("*.py")),
    *sorted((ROOT / "building").glob("*.py")),
]
TRACE = {"step", "ms", "output", "details", "skipped", "trace"}  # the trace's own shape, common to every pipeline


def models_within(schema: type[BaseModel], seen: set) -> None:
    """`schema` and every pydantic model or enum its fields hold, recursively."""
    if schema in seen:
        return
    seen.add(schema)
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        for field in schema.model_fields.values():
            for part in [field.annotation, *typing.get_args(field.annotation)]:
                for inner in [part, *typing.get_args(part)]:
                    if isinstance(inner, type) and issubclass(inner, BaseModel | Enum):
                        models_within(inner, seen)


def pipeline_names() -> dict[str, str]:
    """Every name of the pipeline a face could read, with what it is."""
    schemas: set = set()
    for schema in (model.Input, model.Flags, model.Output, model.Expected):
        models_within(schema, schemas)
    names = {}
    for schema in schemas:
        names[schema.__name__] = "a class of model.py"
        if issubclass(schema, BaseModel):
            names |= {name: f"a field of {schema.__name__}" for name in schema.model_fields if name not in TRACE}
        else:
            names |= {member.value: f"a value of {schema.__name__}" for member in schema if member.value not in names}
    names |= {name: "a constant of model.py" for name in vars(model) if name.isupper() and name not in CONTRACT_CONSTANTS}
    for name in ("Input", "Output", "Flags", "Expected"):  # the contract's own names
        names.pop(name, None)
    files = [*recipe.DATA.values(), *(getattr(model, "LABELLED_SETS", None) or {}).values()]
    names |= {Path(file).name: "a data file" for file in files} | {Path(file).stem: "a data file" for file in files}
    names |= {contract.expected_column(name): "an expected answer's column" for name in model.Expected.model_fields}
    return names


CONTRACT_CONSTANTS = {
    "TITLE", "INTRO", "LABEL", "LABELLED_SETS", "SLICES", "PROBABILITY", "NEEDS_PERSON", "PROBABILITIES",
    "PIPELINE_VERSION", "ROOT", "DATA_DIR",
}  # fmt: skip


# Words the machinery has of its own, which a pipeline may share: a case's fields (loop.edge_cases.EdgeCase), a gate
# interval's bounds, the build's `eval` command, the pipeline's title, LitServe's "normal" shutdown
MACHINERY = {"id", "ticket", "flags", "expected", "note", "source", "train", "status", "answer", "low", "high", "eval", "title", "normal"}
MACHINERY |= {"description", "verdict", "Verdict", "reject", "accept", "text"}  # OpenAPI's, the gate's and the queue's words
ATTRIBUTES_EVERYWHERE = {"text", "category", "id", "title"}  # response.text, unicodedata.category, ...: not read as fields


def uses(path: Path, names: dict[str, str]) -> list[str]:
    """Where a face reads one of `names`: a string that is exactly it (docstrings aside), an attribute that is a field, or
    a class or constant of model.py by name (`model.Category`, `Category`)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    own = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef | ast.FunctionDef)}  # the face's own
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute) and getattr(node, "id", getattr(node, "attr", None)) in own:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            word, kinds = node.value, ("field", "value", "class", "constant", "data file", "expected")
        elif isinstance(node, ast.Attribute) and node.attr not in ATTRIBUTES_EVERYWHERE:
            word, kinds = node.attr, ("field", "class", "constant")
        elif isinstance(node, ast.Name):
            word, kinds = node.id, ("class", "constant")
        else:
            continue
        if word in names and word not in MACHINERY and any(names[word].startswith(f"a {kind}") or kind in names[word] for kind in kinds):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {word!r} ({names[word]})")
    return found


def test_no_face_names_the_pipelines_fields_flags_enums_or_files():
    names = pipeline_names()
    assert len(names) > 10, f"too few names read from model.py to mean anything: {sorted(names)}"
    found = [line for path in FACES for line in uses(path, names)] + uses_in_snakefile(names)
    assert not found, "faces that name the pipeline's own fields, flags, enums or files:\n" + "\n".join(found)


def uses_in_snakefile(names: dict[str, str]) -> list[str]:
    text = (ROOT / "Snakefile").read_text()
    return [f"Snakefile: {word!r} ({what})" for word, what in names.items() if f'"{word}"' in text or f"data/{word}" in text]


def test_the_check_sees_a_name_read_by_a_face(tmp_path, monkeypatch):
    """The scan finds what it looks for: a face that reads an output field and a class of model.py by name is caught."""
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    field = next(name for name in model.Output.model_fields if name not in TRACE | MACHINERY | ATTRIBUTES_EVERYWHERE)
    face = tmp_path / "face.py"
    face.write_text(f'"""A face: {field}."""\n\n\ndef headline(answer):\n    return answer.{field}, {model.Input.__name__}, "{field}"\n')
    found = uses(face, pipeline_names())
    assert len(found) == 3 and all(line.startswith("face.py:5:") for line in found), found


def broken_flags():
    return pydantic.create_model("Flags", needed=(int, ...))


def foreign_expected():
    return pydantic.create_model(
        "Expected", **{name: (field.annotation, None) for name, field in model.Expected.model_fields.items()}, nope=(int, None)
    )


def exampleless_input():
    return pydantic.create_model("Input", **{name: (field.annotation, field) for name, field in model.Input.model_fields.items()})


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("TITLE", None, "`TITLE` must be a string"),
        ("Input", None, "`Input` must be a pydantic model"),
        ("Input", exampleless_input, "Input needs one example"),
        ("Output", dict, "`Output` must be a pydantic model"),
        ("Expected", None, "`Expected` must be a pydantic model"),
        ("Expected", foreign_expected, "Expected.nope is not a field of Output"),
        ("run_batch", None, "no `run_batch("),
        ("Flags", broken_flags, "Flags.needed has none"),
        ("LABEL", "nope", "LABEL = 'nope' is not a field of Output"),
        ("PROBABILITY", "nope", "PROBABILITY = 'nope' is not a field of Output"),
    ],
)
def test_a_missing_or_misshapen_part_of_the_contract_is_named_in_one_line(monkeypatch, name, value, said):
    contract.check()  # the pipeline as it is keeps the contract
    monkeypatch.setattr(model, name, value() if callable(value) and value is not dict else value, raising=False)
    with pytest.raises(contract.ContractError) as raised:
        contract.check()
    message = str(raised.value)
    assert said in message and "README.md, 'Your own pipeline'" in message and "\n" not in message, message


def test_optional_parts_left_out_turn_their_features_off(monkeypatch):
    for name in ("LABEL", "LABELLED_SETS", "SLICES", "PROBABILITY", "NEEDS_PERSON", "PROBABILITIES"):
        monkeypatch.delattr(model, name, raising=False)
    contract.check()
    assert (contract.label(), contract.probability(), contract.needs_person(), contract.probabilities()) == (None, None, None, None)
    assert contract.labelled_sets() == {} and contract.slices() == ()
