"""kb's tests: a package, so shared code is imported as `tests.helpers`, never from conftest."""
