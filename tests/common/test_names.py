"""Names as a report prints them are the names a shell gives back to the next command."""

import shlex

import pytest

from common.names import shown


@pytest.mark.parametrize("name", ["Mariah_Carey", "Ann Lee", "O'Brien \"Q\"", "Zoë $HOME", "-x", "Brad O'Brien",
                                  "O'Brien!", "O'Brien\\n"])
def test_a_printed_name_is_read_back_by_a_shell_as_itself(name):
    assert shlex.split(shown(name)) == [name]
    assert shown("Mariah_Carey") == "Mariah_Carey" and shown("Brad O'Brien") == '"Brad O\'Brien"'  # as it reads
