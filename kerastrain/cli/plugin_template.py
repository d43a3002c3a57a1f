"""``kerastrain plugins new NAME``: write a complete plugin project to start from (as ``llm``'s
plugin template does): a data source, a storage backend, a preset, their tests and a pyproject
with the entry point. The generated tests pass as generated (kerastrain's own tests check it).

The files are the ``*.tmpl`` files in ``plugin_template/`` with ``@NAME@`` replaced; ``package``
in a path becomes ``kerastrain_NAME`` and ``NAME`` becomes the plugin's name.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from kerastrain.errors import ConfigError

TEMPLATE_DIR = Path(__file__).parent / "plugin_template"


def render_plugin(name: str, parent: Path) -> Path:
    """Write the project ``parent/kerastrain-NAME``; returns its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9]{0,30}", name):
        raise ConfigError(
            f"plugin name {name!r}: use lowercase letters and digits, starting with a letter "
            "(it is the data source name, the URL scheme and part of the package name)"
        )
    root = Path(parent) / f"kerastrain-{name}"
    if root.exists():
        raise ConfigError(f"{root} exists already; choose another name or --dir")
    for template in sorted(TEMPLATE_DIR.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATE_DIR).as_posix()[: -len(".tmpl")]
        relative = relative.replace("package/", f"kerastrain_{name}/").replace("NAME", name)
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.read_text().replace("@NAME@", name))
    return root


@click.command(name="new")
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Where to create kerastrain-NAME/")
def new_plugin_command(name, parent):
    """Create kerastrain-NAME/: a plugin with a data source, a storage backend, a preset and tests."""
    root = render_plugin(name, Path(parent))
    click.echo(f"Wrote {root}. Next: cd {root} && pip install -e '.[test]' && pytest")
