"""``opsicle completion bash|zsh|fish``: the shell completion script for the whole command tree."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Literal

from cyclopts import App, Parameter


def command(root: App) -> Callable[..., int]:
    """The ``completion`` command for ``root``: its script covers every command under it."""

    def completion(
        shell: Annotated[
            Literal["bash", "zsh", "fish"], Parameter(help="The shell: bash, zsh or fish.")
        ],
        /,
    ) -> int:
        """Print the completion script (every command, option and choice) for bash, zsh or fish.

        Install it once; new shells then complete commands ('opsicle st' to 'opsicle start'),
        role names, options and their choices:

          bash: opsicle completion bash > ~/.local/share/bash-completion/completions/opsicle

          zsh:  opsicle completion zsh > ~/.zfunc/_opsicle, with fpath+=(~/.zfunc) before
          compinit in ~/.zshrc

          fish: opsicle completion fish > ~/.config/fish/completions/opsicle.fish
        """
        sys.stdout.write(root.generate_completion(shell=shell, prog_name="opsicle"))
        return 0

    return completion
