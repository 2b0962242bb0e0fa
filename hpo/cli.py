"""The ``hpo`` command: ``hpo search SPACE [options]`` and ``hpo worker``.

It answers ``--help`` and refuses a bad space or flag without importing torch, Optuna, MLflow
or Ray: those load once the search is known to be valid.
"""

from __future__ import annotations

import pkgutil
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from hpo._errors import HpoError, unknown
from hpo._settings import SPACE_FIELDS, SearchSettings, click_type, is_duration
from hpo.drivers import DRIVERS, DriverOptions
from hpo.trial import Terminated, trials_text

console = Console(stderr=True)


def _engines() -> dict[str, type[DriverOptions]]:
    return {name: pkgutil.resolve_name(where) for name, where in DRIVERS.items()}


def _engine_flags(engines: dict[str, type[DriverOptions]]) -> Callable[[Any], Any]:
    """Every registered engine's options, each as its flag (``--workers``, ``--ray-address``)."""

    def decorate(command: Any) -> Any:
        declared = set()
        for engine, options in reversed(engines.items()):
            for name, flag in reversed(options.flags().items()):
                if flag in declared:
                    continue
                declared.add(flag)
                field = options.model_fields[name]
                default = "" if "[default" in str(field.description) else f" [default: {field.default}]"
                text = f"{engine.capitalize()} driver: {field.description}{default}."
                command = click.option(flag, default=None, help=text)(command)
        return command

    return decorate


def engine_options(engines: dict[str, type[DriverOptions]], driver: str, flags: dict[str, Any]) -> DriverOptions:
    """The options of ``driver`` from the flags given; a flag of another engine is refused."""
    if driver not in engines:
        raise HpoError(unknown("driver", driver, engines), argument="driver")
    options = engines[driver]
    own = options.keywords()
    for key, value in flags.items():
        if value is not None and key not in own:
            flag = "--" + key.replace("_", "-")
            takes = ", ".join(options.flags().values())
            raise HpoError(f"{flag}: not an option of the {driver} driver (it takes {takes})")
    return options(**{own[key]: value for key, value in flags.items() if value is not None})


def _settings_flags(flags: dict[str, str]) -> Callable[[Any], Any]:
    """The search's settings named in ``flags``, each as its flag, with the field's help and default."""

    def decorate(command: Any) -> Any:
        for name, flag in reversed(flags.items()):
            field = SearchSettings.model_fields[name]
            kind = click_type(name)
            shown = field.default is not None and "[default" not in str(field.description)
            if kind is bool and field.default:
                option = click.option(f"{flag}/--no-{flag[2:]}", name, default=True, show_default=True,
                                      help=f"{field.description}.")
            elif kind is bool:
                option = click.option(flag, name, is_flag=True, default=False, help=f"{field.description}.")
            else:
                option = click.option(flag, name, type=kind, default=field.default, show_default=shown,
                                      metavar="DURATION" if is_duration(name) else None, help=f"{field.description}.")
            command = option(command)
        return command

    return decorate


_ENGINES = _engines()
_FLAGS = SearchSettings.flags() | {
    name: flag for options in _ENGINES.values() for name, flag in options.flags().items()
}


def flag_of(argument: str) -> str:
    """The flag of the ``hpo.search`` argument ``argument``."""
    return _FLAGS.get(argument, "--" + argument.replace("_", "-"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpo", prog_name="hpo", message="%(prog)s %(version)s")
def cli() -> None:
    """Hyperparameter search for PyTorch: Optuna or Ray Tune, every trial in MLflow."""


@cli.command()
@click.argument("space")
@_settings_flags(SearchSettings.flags())
@_engine_flags(_ENGINES)
def search(space: str, **flags: Any) -> None:
    """Search SPACE (a name in search_spaces/ or a YAML path); rerunning resumes the study."""
    from hpo._search import prepare
    from hpo.reporting._terminal import print_summary, progress_shown

    settings = {name: flags.pop(name) for name in SearchSettings.flags()}
    settings["driver"] = engine_options(_ENGINES, settings["driver"], flags)
    prepared = prepare(space=space, **settings)  # refuse bad input first
    try:
        with progress_shown(prepared.plan, console) as bar:
            result = prepared.run(bar)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: main's line says how to resume
        stop.resume = prepared.resume_hint()  # type: ignore[attr-defined]
        raise
    print_summary(result, Console())


@cli.command()
@click.argument("study", required=False)
@click.option("--storage", help="The search's trial store [default: sqlite:///.hpo/optuna.db].")
@click.option("--out", type=click.Path(), help="A folder for the page, its plots and leaderboard.csv, or a .html "
                                                "file for the page alone [default: .hpo/reports/STUDY].")
def report(study: str | None, storage: str | None, out: str | None) -> None:
    """Write the report of a past search (STUDY, or the newest) from its study: plots, ranked
    leaderboard and one self-contained HTML page. Offline: no MLflow needed."""
    from hpo._search import report as write

    console.print(f"Report: {write(study, storage, out)}", soft_wrap=True, highlight=False)


@cli.command()
@click.option("--storage", help="The trial store [default: sqlite:///.hpo/optuna.db].")
def studies(storage: str | None) -> None:
    """List the searches' studies in a trial store: budget, trials by state, best value."""
    from pathlib import Path

    from hpo._search import studies as found
    from hpo.reporting._terminal import print_studies
    from hpo.store import default_storage_url

    print_studies(found(storage), storage or default_storage_url(Path(".hpo")), Console())


@cli.command()
@click.argument("study", required=False)
@click.option("--study", "study_name", help="The study of a running search, as STUDY (`hpo studies` lists them).")
@click.option("--storage", help="The search's trial store: postgresql://... for many machines [default: "
                                "sqlite:///.hpo/optuna.db, on this one].")
@_settings_flags({"population": "--population"})
@_engine_flags({"optuna": _ENGINES["optuna"]})
def worker(study: str | None, study_name: str | None, storage: str | None, population: str, **flags: Any) -> None:
    """Join the running search of STUDY from this machine: draw trials from the same budget."""
    from pathlib import Path

    from hpo._search import prepare_join
    from hpo.reporting._terminal import progress_shown
    from hpo.store import default_storage_url

    study_name = study_name or study
    if study_name is None:
        raise HpoError("hpo worker STUDY: name the study of a running search (hpo studies lists them)")
    joining = prepare_join(study_name, storage or default_storage_url(Path(".hpo")),
                           driver=engine_options(_ENGINES, "optuna", flags), population=population)
    with progress_shown(joining.plan, console, joined=True) as bar:
        ran = joining.run(bar)
    console.print(f"hpo worker: ran {trials_text(ran)} of {study_name!r}; the budget is claimed",
                  soft_wrap=True)


def _click_line(error: click.ClickException) -> str:
    """Click's refusal in hpo's own form: a bad value leads with its flag (``--timeout: '5x' is
    not a valid float.``), as hpo's own checks do."""
    param = getattr(error, "param", None)
    if type(error) is click.BadParameter and param is not None and param.opts:
        return f"{max(param.opts, key=len)}: {error.message}"
    if isinstance(error, click.NoSuchOption) and (hint := SPACE_FIELDS.get(error.option_name.lstrip("-"))):
        return f"{error.option_name}: not a flag: {hint}"  # click's guess for --metric was --trials
    return error.format_message()


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except HpoError as error:
        text = f"{flag_of(error.argument)}: {error.message}" if error.argument else error.message
        console.print(f"[red]hpo: error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.ClickException as error:
        console.print(f"[red]hpo: error:[/] {escape(_click_line(error))}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort) as stop:  # click turns Ctrl-C into Abort
        again = getattr(stop, "resume", None) or getattr(stop.__cause__, "resume", "run the same command again")
        if isinstance(stop, Terminated) or isinstance(stop.__cause__, Terminated):
            console.print(f"hpo: terminated; its running trials are closed as interrupted: {again} to resume",
                          soft_wrap=True)
            sys.exit(143)
        console.print(f"hpo: interrupted; {again} to resume", soft_wrap=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
