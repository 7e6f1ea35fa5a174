"""The contract: what every face reads of model.py, in one place, checked; and the few helpers they share.

model.py declares (README, "Your own pipeline", lists each and what the faces do with it):

    required   TITLE, INTRO, Input, Flags, Output, Expected, run_batch; recipe.py (what the steps run on)
    optional   LABEL, LABELLED_SETS, SLICES, PROBABILITY, NEEDS_PERSON, PROBABILITIES, clean_text

A face asks this module, never model.py's own names: `contract.label()` is None for a pipeline with no label, and
the face leaves its metrics out. `check()` runs at build and at start: a missing or ill-shaped part is one line
naming it and where the contract is documented, never an AttributeError inside a face.
"""

import types
import typing
import unicodedata
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

import model

WHERE = "see README.md, 'Your own pipeline'"
EXPECTED_PREFIX = "expected_"  # a table's column expected_<field> holds a row's right <field>: expected_category, ...


class ContractError(RuntimeError):
    """model.py lacks a part of the contract, or a part has the wrong shape; the message names it."""


def _schema(name: str) -> type[BaseModel]:
    value = getattr(model, name, None)
    if not (isinstance(value, type) and issubclass(value, BaseModel)):
        raise ContractError(f"model.py: `{name}` must be a pydantic model ({WHERE})")
    return value


def check() -> None:
    """Every required part of the contract is there and every optional one that is set fits; else ContractError."""
    for name in ("TITLE", "INTRO"):
        if not isinstance(getattr(model, name, None), str):
            raise ContractError(f"model.py: `{name}` must be a string, the pipeline's {name.lower()} ({WHERE})")
    inputs, flags, output = _schema("Input"), _schema("Flags"), _schema("Output")
    if not callable(getattr(model, "run_batch", None)):
        raise ContractError(f"model.py: no `run_batch(inputs, flags, debug=False, timings=None)` ({WHERE})")
    without = [name for name, field in flags.model_fields.items() if field.is_required()]
    if without:
        raise ContractError(f"model.py: every flag needs a default; Flags.{without[0]} has none ({WHERE})")
    try:
        inputs.model_validate(input_example())
    except (LookupError, TypeError) as error:
        raise ContractError(f'model.py: Input needs one example, model_config["json_schema_extra"]["examples"] ({WHERE})') from error
    except ValidationError as error:
        raise ContractError(f"model.py: Input's example is not a valid Input ({error_message(error)}) ({WHERE})") from None
    fields = output.model_fields
    for name, what in (("LABEL", "the labelled field"), ("PROBABILITY", "the label's probability"), ("NEEDS_PERSON", "a bool")):
        value = getattr(model, name, None)
        if value is not None and value not in fields:
            raise ContractError(f"model.py: {name} = {value!r} is not a field of Output ({what}; {WHERE})")
    if needs_person() and fields[needs_person()].annotation is not bool:
        raise ContractError(f"model.py: NEEDS_PERSON = {needs_person()!r} must name a bool field of Output ({WHERE})")
    expected = _schema("Expected")
    if label() and label() not in expected.model_fields:
        raise ContractError(f"model.py: Expected has no field {label()!r} (the LABEL) ({WHERE})")
    foreign = [name for name in expected.model_fields if name not in fields]
    if foreign:
        raise ContractError(f"model.py: Expected.{foreign[0]} is not a field of Output ({WHERE})")


# ---------------------------------------------------------------------------------------------
# The parts, each None where the pipeline leaves it out
# ---------------------------------------------------------------------------------------------
def title() -> str:
    return model.TITLE


def intro() -> str:
    return model.INTRO


def label() -> str | None:
    """The Output field labelled data judges (accuracy, confusion matrix, the gate's sets), or None."""
    return getattr(model, "LABEL", None)


def probability() -> str | None:
    return getattr(model, "PROBABILITY", None)


def needs_person() -> str | None:
    return getattr(model, "NEEDS_PERSON", None)


def probabilities() -> tuple[str, str] | None:
    """(step, key of its debug details) holding every class's probability, or None."""
    return getattr(model, "PROBABILITIES", None)


def slices() -> tuple[str, ...]:
    return tuple(getattr(model, "SLICES", None) or ())


def labelled_sets() -> dict[str, Path]:
    """The labelled sets of data/ that exist, by name (the first one is the evaluation set); none without a label."""
    named = (getattr(model, "LABELLED_SETS", None) or {}) if label() else {}
    return {name: model.DATA_DIR / file for name, file in named.items() if (model.DATA_DIR / file).exists()}


def has_trace() -> bool:
    return "trace" in model.Output.model_fields


def expected_column(field: str | None = None) -> str:
    """The column of a labelled table that holds the right answer for `field` (default: the label)."""
    return EXPECTED_PREFIX + (field or label() or "")


def input_example() -> dict[str, Any]:
    """The Input's own example: the API's example, the health check's canary, the tests' first input."""
    return dict(model.Input.model_config["json_schema_extra"]["examples"][0])


def text_field() -> str | None:
    """The Input's first text field (what tables show of a row), or None."""
    return next((name for name, field in model.Input.model_fields.items() if base_type(field.annotation) is str), None)


def output_fields() -> dict[str, Any]:
    """Output's fields, the trace aside."""
    return {name: field for name, field in model.Output.model_fields.items() if name != "trace"}


# ---------------------------------------------------------------------------------------------
# The shapes of a field, as every face reads them from its annotation
# ---------------------------------------------------------------------------------------------
def base_type(annotation):
    """`Annotated[str, ...]` -> str; `X | None` -> X."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return base_type(args[0])
    return annotation


def is_optional(annotation) -> bool:
    """Whether a field may be null (`X | None`)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return type(None) in typing.get_args(annotation)


def is_enum(annotation) -> bool:
    annotation = base_type(annotation)
    return isinstance(annotation, type) and issubclass(annotation, Enum)


def choices(annotation) -> list:
    """The values an enum or a Literal allows, in the schema's order; [] for any other type."""
    annotation = base_type(annotation)
    if is_enum(annotation):
        return [member.value for member in annotation]
    return list(typing.get_args(annotation)) if typing.get_origin(annotation) is typing.Literal else []


def model_of(annotation) -> type[BaseModel] | None:
    """The pydantic model a field holds (a nested model), or None."""
    annotation = base_type(annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def is_scalar(annotation) -> bool:
    """One value a cell holds as text: a string, number or bool, an enum or a Literal, or a union of those."""
    annotation = base_type(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # a union of scalars (int | str) is one
        return all(is_scalar(a) for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is not None:  # list[...], dict[...] are not
        return False
    return isinstance(annotation, type) and issubclass(annotation, str | int | float | bool | Enum)


# ---------------------------------------------------------------------------------------------
# Helpers every face shares
# ---------------------------------------------------------------------------------------------
def input_from_row(row: dict[str, Any], columns: dict[str, str] | None = None) -> BaseModel:
    """An Input from one row of a table (a CSV's cells, all strings): each field from the column of its name, or the
    column `columns` maps it to. A missing column or an empty cell takes the field's default (a required field is
    passed as it is, so the error names it); a bad value raises pydantic's ValidationError naming the field."""
    columns = columns or {}
    given = {}
    for name, field in model.Input.model_fields.items():
        value = row.get(columns.get(name, name))
        if isinstance(value, float) and value != value:  # pandas' NaN for an empty cell
            value = None
        if field.is_required() or value not in (None, ""):
            given[name] = value
    return model.Input.model_validate(given)


def run_each(inputs: list, flags=None, timings: dict[str, float] | None = None) -> list:
    """`run_batch`, except that an input on which the pipeline fails gets its exception in its place, so one bad
    input cannot take a whole batch down (the batch report and the API rely on this)."""
    try:
        return model.run_batch(inputs, flags, timings=timings)
    except Exception:
        results = []
        for one, f in zip(inputs, flags if isinstance(flags, list) else [flags] * len(inputs), strict=True):
            try:
                results.append(model.run_batch([one], f)[0])
            except Exception as error:
                results.append(error)
        return results


def run(one, flags=None, debug: bool = False):
    """One input through the pipeline: `run_batch([one])[0]`."""
    return model.run_batch([one], flags, debug=debug)[0]


def error_message(error: ValidationError) -> str:
    """A pydantic error as one line naming each field: `text: String should have at least 1 character`."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())


def matches(expected: BaseModel, answer: BaseModel) -> bool:
    """Whether an answer is right: every field the expected answer gives equals the answer's."""
    wanted = {k: v for k, v in expected.model_dump().items() if v is not None}
    return {k: getattr(answer, k) for k in wanted} == wanted


def masking() -> str | None:
    """What the pipeline's `clean_text` does to a kept case's text (its docstring's first line), or None when it has
    none: then nothing is masked, and no face offers to keep the text as written."""
    own = getattr(model, "clean_text", None)
    return ((own.__doc__ or "masks personal data").strip().splitlines()[0]) if own is not None else None


def clean_text(text: str, masked: bool = True) -> str:
    """A kept case's text or note as the store keeps it: the pipeline's `clean_text` (masking personal data unless not
    `masked`) where it has one, else clean unicode on one line."""
    own = getattr(model, "clean_text", None)
    if own is not None:
        return own(text, masked)
    text = unicodedata.normalize("NFKC", text)
    return " ".join("".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text).split())
