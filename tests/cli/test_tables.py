"""Tables meant for reading stay whole when piped: `kerastrain plugins | grep NAME` works."""

import json

from tests.helpers import kerastrain


def test_plugins_piped_shows_every_name_and_part_whole():
    table = kerastrain("plugins").stdout  # stdout is a pipe here, as in `| grep`
    lines = table.splitlines()
    for row in json.loads(kerastrain("plugins", "--json").stdout):
        assert any(row["name"] in line for line in lines), row["name"]
        for part in row["registers"]:
            assert any(part in line for line in lines), part
    assert "…" not in table


def test_presets_piped_keeps_names_and_descriptions_whole():
    table = kerastrain("presets").stdout
    assert "…" not in table and "smoke tests and CPU experiments in minutes" in table
