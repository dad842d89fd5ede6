"""Every command's --help: examples a user can copy, and a help text for every option."""

import click
import pytest
from click.testing import CliRunner

from gic.cli import main as gic_main
from tune.cli import main as tune_main


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    """The command paths of the group itself and of every command and group under it."""
    yield path
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = [("gic", gic_main, p) for p in _commands(gic_main)] + [("gic-tune", tune_main, p) for p in _commands(tune_main)]


@pytest.mark.parametrize("program, group, path", COMMANDS, ids=[" ".join((p, *c)) for p, _, c in COMMANDS])
def test_every_help_has_examples_of_its_own_command(program, group, path):
    result = CliRunner().invoke(group, [*path, "--help"], prog_name=program, terminal_width=100)
    assert result.exit_code == 0, result.output
    text = result.stdout
    command = " ".join((program, *path))
    assert text.startswith(f"Usage: {command} ")
    assert "\n  Examples:\n" in text, text
    block = text.split("\n  Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    # one or two examples, each one whole command line (a \\b paragraph: click does not rewrap it)
    assert 1 <= len(block) <= 2 and all(line.startswith(f"    {program} ") for line in block), block
    assert any(line.startswith(f"    {command} ") for line in block), block


@pytest.mark.parametrize("program, group, path", COMMANDS, ids=[" ".join((p, *c)) for p, _, c in COMMANDS])
def test_every_option_says_what_it_does(program, group, path):
    command = group
    for name in path:
        command = command.commands[name]
    missing = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help
               and p.name not in ("help", "version")]
    assert not missing, f"{program} {' '.join(path)}: options without help: {missing}"


def test_gic_bench_search_help_lists_the_options_it_hands_over():
    result = CliRunner().invoke(gic_main, ["bench", "search", "--help"], prog_name="gic")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: gic bench search [OPTIONS]")
    for option in ("--config", "--num-samples", "--no-single", "--json", "--set"):
        assert option in result.stdout
    assert "gic-tune bench" not in result.stdout and "gic bench search --num-samples" in result.stdout
