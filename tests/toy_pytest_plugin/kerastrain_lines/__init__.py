"""A separate toy distribution whose own tests use kerastrain's pytest fixtures with no conftest:
a data source ``lines:PATH`` reading one document per line of a text file."""

from pathlib import Path

from kerastrain.errors import DataError
from kerastrain.hookspecs import hookimpl


class LineDocuments:
    def __init__(self, lines):
        self.lines = lines

    def iter_from(self, start):
        yield from self.lines[start:]

    def __len__(self):
        return len(self.lines)


class LinesSource:
    name = "lines"
    description = "One document per line of a text file: --dataset-id lines:PATH"

    def splits(self, request):
        return ["train"]

    def open(self, request):
        path = Path(request.location)
        if not path.is_file():
            raise DataError(f"lines:{path}: no such file")
        return LineDocuments([line for line in path.read_text().splitlines() if line.strip()])


@hookimpl
def register_data_sources(register):
    register(LinesSource())
