"""`prompt.yaml`: parsing with clear errors, checks of declared defaults, dumping, and a
cache of the metadata of a template at a commit."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from mlops.errors import InvalidInputError, problems
from mlops.prompts.models import PromptMetadata
from mlops.prompts.rendering import RenderError, bind_variables
from mlops.prompts.repository import METADATA_FILE, read_blob

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_metadata(text: str) -> PromptMetadata:
    """`prompt.yaml` text -> metadata; invalid YAML or fields are a clear 422."""
    try:
        data = yaml.load(text, Loader=_Loader)  # a safe loader (C if available)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidInputError(f"prompt.yaml is not valid YAML{where}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("prompt.yaml must be a mapping (description, variables, ...).")
    try:
        metadata = PromptMetadata.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"prompt.yaml is invalid: {problems(exc)}") from None
    check_defaults(metadata)
    return metadata


def check_defaults(metadata: PromptMetadata) -> None:
    """Every declared default fits its variable's type."""
    for name, spec in metadata.variables.items():
        if spec.default is not None:
            try:
                bind_variables({name: spec}, {name: spec.default})
            except RenderError as exc:
                raise InvalidInputError(f"Default of variable '{name}': {exc.message}") from None


def dump_metadata(metadata: PromptMetadata) -> str:
    return yaml.safe_dump(metadata.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


@lru_cache(maxsize=20_000)
def metadata_at(repo_path: Path, sha: str, name: str) -> PromptMetadata:
    """Metadata of a template at a commit (immutable, so cached by sha)."""
    return parse_metadata(read_blob(repo_path, sha, f"{name}/{METADATA_FILE}"))
