"""What the project's command lines share (`gic` and `gic-tune`): user mistakes as one `error:` line
with exit code 2, warnings for the user as one `warning:` line each, and the help settings.

    @click.group(cls=OneLineErrors, context_settings=CONTEXT)
    def main(): ...

    @main.command()
    @user_errors
    def cmd(): ...
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings

import click

from gic.errors import GicError


def user_errors(fn):
    """Turn GicError (bad input the user can fix) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GicError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@contextlib.contextmanager
def warnings_as_lines():
    """Within the block, show each UserWarning as one `warning: MESSAGE` line on stderr.

    Python would print `FILE:LINE: UserWarning: MESSAGE` and the source line that raised it; the
    data loader's warnings (skip summaries, a bad image skipped, an unwritable cache) are meant for
    the user, who needs the message alone. Other categories are shown as Python shows them.
    """
    with warnings.catch_warnings():
        # Each distinct warning once per command, even when an earlier command in this process said it.
        warnings.simplefilter("default", UserWarning)
        python_way = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, UserWarning):
                click.echo(f"warning: {' '.join(str(message).splitlines())}", err=True)
            else:
                python_way(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


class OneLineErrors(click.Group):
    """A command group whose usage errors (a bad option value, a missing argument, an unknown
    command) are one `error:` line naming the command, with exit code 2, like every other user error.
    Warnings for the user are one `warning:` line each (`warnings_as_lines`)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            with warnings_as_lines():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as err:
            where = f"{err.ctx.command_path}: " if getattr(err, "ctx", None) is not None else ""
            hint = " (see --help)" if isinstance(err, click.UsageError) else ""
            click.echo(f"error: {where}{err.format_message()}{hint}", err=True)
            sys.exit(2 if isinstance(err, click.UsageError) else err.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
