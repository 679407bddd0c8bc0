"""The ``llm-token-exporter`` command: ``serve``, ``demo``, ``check-config``, ``report`` and
``grafana-provision``.

Exit codes: 0 success; 1 ``check-config`` found a problem in the directory or the price catalog;
2 a usage or configuration error, or a failure to start (one line on stderr, no traceback). The
server and the demo are imported only when their sub-command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata

from exporter.config import CONFIG_ENV, ENV_PREFIX, Config, ConfigError, load_config
from exporter.grafana_provision import DEFAULT_GATEWAY_URL as _GATEWAY_URL
from exporter.grafana_provision import DEFAULT_PROVISIONING_PATH as _PROVISIONING_PATH

DISTRIBUTION = "llm-token-exporter"
_DEMO_LISTEN = "127.0.0.1:0"
#: The demo's server logs only what goes wrong: its output is the tenants' views.
_DEMO_LOG_LEVEL = "WARNING"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


#: How help shows a default that is the empty string (the key's "not set" value).
_EMPTY_DEFAULT = {
    "directory": "the demo directory shipped in the package",
    "prices": "the list-price catalog shipped in the package",
    "auth_token": "none: ingestion is unauthenticated",
}


def _config_help(key: str, text: str) -> str:
    """``text`` with the key's default, read from :class:`Config`, and its environment
    variable: "address to listen on (default: 0.0.0.0:4318; env LLM_TOKEN_EXPORTER_LISTEN)"."""
    default = {f.name: f.default for f in dataclasses.fields(Config)}[key]
    shown = _EMPTY_DEFAULT.get(key, "") if default == "" else str(default)
    # argparse formats help with %: a literal % must be doubled.
    return f"{text} (default: {shown}; env {ENV_PREFIX}{key.upper()})".replace("%", "%%")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=DISTRIBUTION,
        description="Attribute LLM tokens from OpenTelemetry spans and export them to Prometheus.",
        epilog="Every config key also has an environment variable LLM_TOKEN_EXPORTER_<KEY>; "
        "LLM_TOKEN_EXPORTER_CONFIG names the config file.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run the service: OTLP/HTTP on POST /v1/traces, Prometheus on GET /metrics.",
        epilog="Flags win over the environment, which wins over the config file. Every key, "
        "with its default: exporter/data/example-config.yaml.",
    )
    serve.add_argument(
        "--config", metavar="FILE", help=f"YAML config file (default: none; env {CONFIG_ENV})"
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help=_config_help("listen", "address to listen on")
    )
    serve.add_argument(
        "--directory",
        metavar="FILE_OR_URL",
        help=_config_help("directory", "the tenant directory, a YAML/JSON file or an http(s) URL"),
    )
    serve.add_argument(
        "--prices", metavar="FILE", help=_config_help("prices", "the price catalog file")
    )
    serve.add_argument(
        "--state-dir",
        metavar="DIR",
        help=_config_help("state_dir", "where the durable state lives"),
    )
    serve.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help=_config_help("auth_token", "bearer token POST /v1/traces requires"),
    )
    serve.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=_config_help("log_level", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    )
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="run the service with a realistic demo workload")
    demo.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=_DEMO_LISTEN,
        help=f"address to listen on (default {_DEMO_LISTEN}: a free port)",
    )
    demo.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the state lives (default: a temporary directory, removed after)",
    )
    demo.add_argument("--no-progress", action="store_true", help="do not report progress")
    demo.set_defaults(run=_demo)

    check = commands.add_parser("check-config", help="validate the config, directory and prices")
    check.add_argument("--config", metavar="FILE", help="YAML config file")
    check.add_argument("--directory", metavar="FILE_OR_URL", help="the tenant directory")
    check.add_argument("--prices", metavar="FILE", help="the price catalog")
    check.set_defaults(run=_check_config)

    report = commands.add_parser(
        "report",
        help="a tenant's monthly report from the ledger",
        description="Tokens, calls and cost of one tenant's calendar month (its timezone), "
        "per model, agent, workflow and member, read from the state directory of `serve` "
        "(also while it runs: read-only, calls not yet checkpointed included).",
    )
    report.add_argument("--config", metavar="FILE", help="YAML config file (as for serve)")
    report.add_argument("--state-dir", metavar="DIR", help="the state directory of serve")
    report.add_argument("--directory", metavar="FILE_OR_URL",
                        help="the tenant directory, for names (default: the config's)")
    report.add_argument("--tenant", metavar="ID", required=True, help="the tenant's id")
    report.add_argument("--month", metavar="YYYY-MM", required=True, type=_month,
                        help="the tenant's calendar month")
    report.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table (costs to 6 decimals), csv or json (exact costs); "
                        "default table")
    report.set_defaults(run=_report)

    provision = commands.add_parser(
        "grafana-provision",
        help="Grafana provisioning: one org per tenant, pinned to the tenant gateway",
        description="Write, for every tenant of the directory with a gateway token in the "
        "config (gateway.tenants), a Grafana org (orgs.json and create-orgs.sh: Grafana "
        "cannot create orgs from files), its one data source at the tenant gateway with the "
        "tenant's X-Tenant-Token, and the tenant dashboards without a tenant variable. "
        "Step by step: docs/grafana-tenants.md.",
        epilog="A token the config reads from token_env: VAR is written as $VAR, which "
        "Grafana expands from its own environment: VAR need not be set here.",
    )
    provision.add_argument("--config", metavar="FILE",
                           help=f"YAML config file with gateway.tenants (env {CONFIG_ENV})")
    provision.add_argument("--directory", metavar="FILE_OR_URL",
                           help="the tenant directory (default: the config's)")
    provision.add_argument("--out", metavar="DIR", required=True,
                           help="where to write orgs.json, create-orgs.sh and provisioning/")
    provision.add_argument("--gateway-url", metavar="URL", default=_GATEWAY_URL,
                           help=f"the gateway as Grafana reaches it (default {_GATEWAY_URL})")
    provision.add_argument("--lang", choices=("en", "zh", "both"), default="both",
                           help="the dashboards' language(s) (default both)")
    provision.add_argument("--dashboards", metavar="DIR",
                           help="the generated dashboards, DIR/<lang>/llm-tenant-*.json "
                           "(default: grafana/dashboards of the source tree)")
    provision.add_argument("--provisioning-path", metavar="PATH",
                           default=_PROVISIONING_PATH,
                           help="Grafana's provisioning directory as Grafana sees it, for "
                           f"the dashboard providers' paths (default {_PROVISIONING_PATH})")
    provision.add_argument("--strict", action="store_true",
                           help="a directory tenant without a gateway token is an error "
                           "(exit 1, nothing written), not a warning")
    provision.set_defaults(run=_grafana_provision)
    return parser


def _month(text: str) -> str:
    from exporter.report import check_month

    try:
        return check_month(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _overrides(args: argparse.Namespace, *keys: str) -> dict[str, object]:
    return {key: getattr(args, key, None) for key in keys}


def _configure_logging(level: str) -> None:
    logging.basicConfig(format=_LOG_FORMAT)  # no-op when the root logger already has a handler
    logging.getLogger().setLevel(level)


def _fail(command: str, message: str) -> int:
    """A startup failure: one line on standard error, exit status 2."""
    print(f"{DISTRIBUTION} {command}: {message}", file=sys.stderr)
    return 2


def _serve(args: argparse.Namespace) -> int:
    """Every failure to start is one line on standard error and exit status 2: a bad config
    value, a price catalog that does not load, a state directory that cannot be used or that
    another process holds, an address that cannot be listened on. A directory that does not
    load is no failure: the service waits for it, answering 503 (docs/directory.md)."""
    keys = ("listen", "directory", "prices", "state_dir", "auth_token", "log_level")
    config = load_config(args.config, overrides=_overrides(args, *keys))
    state_dir = pathlib.Path(config.state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        return _fail("serve", f"state_dir {config.state_dir!r}: exists and is not a directory")
    _configure_logging(config.log_level)
    from exporter.server import serve
    from exporter.store import StoreError
    from otel_processor.budgets import BudgetError
    from otel_processor.directory import DirectoryError
    from otel_processor.prices import PriceError

    try:
        code = serve(config)
    except KeyboardInterrupt:
        return 130
    except StoreError as exc:  # another process holds the state directory, or it is unusable
        return _fail("serve", str(exc))
    except PriceError as exc:  # the message starts with the catalog's path
        return _fail("serve", f"prices: {exc}")
    except BudgetError as exc:  # the message starts with the budgets file's path
        return _fail("serve", f"budgets: {exc}")
    except DirectoryError as exc:  # the message starts with the directory's source
        return _fail("serve", f"directory: {exc}")
    except OSError as exc:  # the listen address is taken or not ours
        return _fail("serve", f"cannot listen on {config.listen}: {exc.strerror or exc}")
    return code if isinstance(code, int) else 0


def _demo(args: argparse.Namespace) -> int:
    """The demo runs on the embedded defaults: the environment and config files do not apply."""
    overrides = {"listen": args.listen, "log_level": _DEMO_LOG_LEVEL}
    with tempfile.TemporaryDirectory(prefix="llm-token-exporter-demo-") as scratch:
        overrides["state_dir"] = args.state_dir or scratch
        config = load_config(None, env={}, overrides=overrides)
        _configure_logging(config.log_level)
        from exporter import demo
        from exporter.store import StoreError

        try:
            code = demo.main(config, progress=not args.no_progress)
        except KeyboardInterrupt:
            return 130
        except StoreError as exc:  # --state-dir unusable, or held by another process
            return _fail("demo", str(exc))
        except OSError as exc:  # --listen taken or not ours
            return _fail("demo", f"cannot listen on {config.listen}: {exc.strerror or exc}")
    return code if isinstance(code, int) else 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _check_config(args: argparse.Namespace) -> int:
    """Load the directory and the price catalog the config names; print what they hold."""
    from otel_processor.directory import DirectoryError
    from otel_processor.directory_source import load_directory
    from otel_processor.prices import PriceError
    from otel_processor.prices_source import load_prices

    config = load_config(args.config, overrides=_overrides(args, "directory", "prices"))
    found = [f"config OK: listen {config.listen}, state dir {config.state_dir}"]
    problems = []
    state_dir = pathlib.Path(config.state_dir)
    if state_dir.exists() and not state_dir.is_dir():
        problems.append(f"state_dir {config.state_dir!r}: exists and is not a directory")
    try:
        directory = load_directory(config.directory_source, timeout=config.directory_timeout)
    except DirectoryError as exc:
        problems.append(f"directory: {exc}")
    else:
        tenants = directory.tenants.values()
        memberships = sum(len(t.members) for t in tenants)
        members = len({m.id for t in tenants for m in t.members})
        chats = sum(1 for w in directory.workflows.values() if directory.is_chatflow(w.id))
        found.append(
            f"directory: {_plural(len(tenants), 'tenant')}, {_plural(members, 'member')} "
            f"({_plural(memberships, 'membership')}), {_plural(len(directory.agents), 'agent')}, "
            f"{_plural(len(directory.workflows), 'workflow')} "
            f"({_plural(chats, 'chat workflow')})"
        )
    try:
        catalog = load_prices(config.prices_path)
    except PriceError as exc:
        problems.append(f"prices: {exc}")
    else:
        found.append(f"prices: {_plural(len(catalog), 'model')}")
    if config.budgets:
        from otel_processor.budgets import BudgetError, load_budgets

        try:
            budgets = load_budgets(config.budgets)
        except BudgetError as exc:
            problems.append(f"budgets: {exc}")
        else:
            found.append(f"budgets: {_plural(len(budgets.by_key), 'budget')}, "
                         f"{_plural(len(budgets.calendar.names), 'tenant timezone')}")
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    print("; ".join(found))
    return 0


def _report(args: argparse.Namespace) -> int:
    """The report on standard output; names from the directory (ids when it does not load,
    said on standard error). An unknown tenant or a month without usage is an empty report
    with a note; an unreadable state directory is one line and exit status 2."""
    from exporter.report import FORMATTERS, ReportError, monthly_report
    from otel_processor.directory import DirectoryError
    from otel_processor.directory_source import load_directory

    config = load_config(args.config, overrides=_overrides(args, "directory", "state_dir"))
    state_dir = pathlib.Path(config.state_dir)
    if not state_dir.is_dir():
        return _fail("report", f"state_dir {config.state_dir!r}: not a directory")
    try:
        directory = load_directory(config.directory_source, timeout=config.directory_timeout)
    except DirectoryError as exc:
        print(f"{DISTRIBUTION} report: directory: {exc}; names are the ids", file=sys.stderr)
        directory = None
    timezone = None
    if config.budgets:
        from otel_processor.budgets import BudgetError, load_budgets

        try:
            timezone = load_budgets(config.budgets).calendar.timezone_name(args.tenant)
        except BudgetError as exc:
            print(f"{DISTRIBUTION} report: budgets: {exc}; timezone not shown", file=sys.stderr)
    try:
        report = monthly_report(state_dir, args.tenant, args.month, directory=directory,
                                timezone=timezone)
    except ReportError as exc:
        return _fail("report", str(exc))
    sys.stdout.write(FORMATTERS[args.format](report))
    return 0


def _grafana_provision(args: argparse.Namespace) -> int:
    """Exit 0 when written (warnings on standard error), 1 when ``--strict`` refuses a tenant
    or no tenant has a token, 2 when the config, the directory or the dashboards do not
    load. A ``token_env`` variable not set here stands in with a placeholder: the data
    source only references it."""
    import os

    from exporter import grafana_provision as gp
    from otel_processor.directory import DirectoryError
    from otel_processor.directory_source import load_directory

    command = "grafana-provision"
    path = args.config
    if path is None and os.environ.get(CONFIG_ENV, "").strip():
        path = os.environ[CONFIG_ENV].strip()
    env_names = gp.token_env_names(path)
    env = dict(os.environ)
    unset = sorted({v for v in env_names.values() if not env.get(v, "").strip()})
    env.update({v: gp.placeholder_token(v) for v in unset})
    config = load_config(path, env=env, overrides=_overrides(args, "directory"))
    if not config.gateway.tenants:
        return _fail(command, "the config has no gateway.tenants (the tenant gateway: "
                              "docs/tenant-gateway.md)")
    url = args.gateway_url.rstrip("/")
    if not url.lower().startswith(("http://", "https://")):
        return _fail(command, f"--gateway-url {args.gateway_url!r}: must be an http(s) URL")
    try:
        directory = load_directory(config.directory_source, timeout=config.directory_timeout)
    except DirectoryError as exc:
        return _fail(command, f"directory: {exc}")
    secrets: dict[str, gp.TenantSecret] = {}
    problems: list[str] = []
    for t in config.gateway.tenants:
        var = env_names.get(t.name, "")
        if var and not gp.ENV_NAME.fullmatch(var):
            problems.append(f"tenant {t.name}: token_env {var!r} is no variable name Grafana "
                            "expands (letters, digits, _)")
        else:
            secrets[t.name] = gp.TenantSecret(t.name, var, "" if var else t.token)
    tenants = list(directory.tenants)
    gateway_names = {t.name for t in config.gateway.tenants}
    problems += [f"tenant {t}: no gateway token (gateway.tenants.{t} in the config)"
                 for t in tenants if t not in gateway_names]
    if args.strict and problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    if not any(t in secrets for t in tenants):
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        print(f"{DISTRIBUTION} {command}: no tenant of the directory has a gateway token: "
              "nothing written", file=sys.stderr)
        return 1
    bad_env = [p for p in problems if "token_env" in p]
    reported = tuple(p.split(": token_env")[0] + ":" for p in bad_env)  # "tenant X:"
    if args.dashboards:
        dashboards = pathlib.Path(args.dashboards)
    else:
        dashboards = pathlib.Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
    languages = ("en", "zh") if args.lang == "both" else (args.lang,)
    try:
        done = gp.provision(pathlib.Path(args.out), tenants, secrets, gateway_url=url,
                            languages=languages, dashboards=dashboards,
                            provisioning_path=args.provisioning_path)
    except gp.ProvisionError as exc:
        return _fail(command, str(exc))
    except OSError as exc:
        return _fail(command, f"cannot write {args.out}: {exc.strerror or exc}")
    warnings = [w for w in done.warnings if not w.startswith(reported)]
    for line in [f"{p}: skipped" for p in bad_env] + warnings:
        print(f"warning: {line}", file=sys.stderr)
    for var in unset:
        users = sorted(t for t, v in env_names.items() if v == var and t in done.orgs)
        if users:
            print(f"note: {var} is not set here; Grafana must have it in its environment "
                  f"(tenant {', '.join(users)})", file=sys.stderr)
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    orgs = ", ".join(f"{t} (org {i})" for t, i in done.orgs.items())
    print(f"wrote {_plural(len(done.orgs), 'tenant')} under {args.out}: {orgs}; "
          f"run {pathlib.Path(args.out) / 'create-orgs.sh'} before Grafana reads them")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"{DISTRIBUTION} {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
