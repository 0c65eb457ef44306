"""MkDocs hook: one API reference page per module listed in ``extra.api_modules``.

The list in ``mkdocs.yml`` is the only place to edit: this hook writes a page
``api/<module>.md`` holding a mkdocstrings directive for each module and appends an
"API reference" section with those pages to the navigation.
"""

from __future__ import annotations

from mkdocs.structure.files import File

SECTION = "API reference"


def _modules(config) -> list[str]:
    modules = config["extra"].get("api_modules") or []
    if not all(isinstance(name, str) and name for name in modules):
        raise ValueError(
            f"mkdocs.yml: extra.api_modules must be a list of module names, got {modules!r}"
        )
    return modules


def _page(module: str) -> str:
    return f"api/{module}.md"


def on_config(config):
    if config["nav"] is not None:
        config["nav"].append({SECTION: [{name: _page(name)} for name in _modules(config)]})
    return config


def on_files(files, config):
    for name in _modules(config):
        content = f"# `{name}`\n\n::: {name}\n"
        files.append(File.generated(config, _page(name), content=content))
    return files
