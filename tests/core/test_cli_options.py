"""Every flag the command line generates sets its option; sizes, devices and option names that
would clash are refused or resolved with a message naming the flag."""

from __future__ import annotations

import inspect
import keyword
import string
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooked import checks, cli, registry
from hooked.errors import OptionError

ENTRIES = [(kind, name) for kind in registry.KINDS for name in registry.entries(kind)]


def parser_for(entry: registry.Entry):
    """The parser the command line builds for ``entry``, its options' flags, and their dest prefix."""
    if entry.kind == "model":
        p, flags = cli._model_parser("test", entry)
    elif entry.kind == "analysis":
        p, flags = cli._run_parser(entry, None)
    else:
        p, flags = cli._repro_parser(entry)
    return p, flags, entry.kind + "_"


WORD = st.text(string.ascii_letters + string.digits + "_./", min_size=1, max_size=12)


def value_and_args(option: registry.Option, flag: str) -> st.SearchStrategy:
    """(value, argv) pairs: a value of the option's type and the flag arguments that give it."""
    tp, origin, args = option.type, typing.get_origin(option.type), typing.get_args(option.type)
    if tp is bool:
        return st.booleans().map(lambda v: (v, [flag] if v else ["--no-" + flag[2:]]))
    if option.name == "device":
        return st.sampled_from(["cpu", "meta"]).map(lambda v: (v, [flag, v]))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = next(a for a in args if a is not type(None))
        some = value_and_args(registry.Option(option.name, inner, option.default), flag)
        return st.one_of(st.just((None, [f"{flag}=none"])), some)
    if origin is typing.Literal:
        return st.sampled_from(args).map(lambda v: (v, [f"{flag}={v}"]))
    if origin in (list, tuple) or tp in (list, tuple):
        item = args[0] if args else str
        items = {int: st.integers(-1000, 1000), float: st.floats(-1e6, 1e6, allow_nan=False), str: WORD}[item]
        return st.lists(items, min_size=1, max_size=4).map(
            lambda vs: (list(vs), [f"{flag}={','.join(map(repr if item is float else str, vs))}"])
        )
    if tp is int:
        return st.integers(-(10**9), 10**9).map(lambda v: (v, [flag, str(v)]))
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False).map(lambda v: (v, [flag, repr(v)]))
    return WORD.map(lambda v: (v, [f"{flag}={v}"]))


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_generated_flag_sets_its_option(kind, name, data):
    entry = registry.get(kind, name)
    parser, flags, prefix = parser_for(entry)
    assert sorted(flags) == sorted(o.name for o in entry.options)
    assert len(set(flags.values())) == len(flags)
    defaults = parser.parse_args([])
    for o in entry.options:
        assert getattr(defaults, prefix + o.name) == o.default, o.name
    chosen = data.draw(st.lists(st.sampled_from(entry.options), unique_by=lambda o: o.name, max_size=6))
    argv, expected = [], {}
    for o in chosen:
        value, args = data.draw(value_and_args(o, flags[o.name]))
        argv += args
        expected[o.name] = value
    ns = parser.parse_args(argv)
    for o in entry.options:
        got = getattr(ns, prefix + o.name)
        want = expected.get(o.name, o.default)
        assert got == want or (isinstance(got, list) and list(got) == list(want)), (o.name, argv, got)


def test_an_option_named_no_something_can_be_set_both_ways():
    p, flags, _ = parser_for(registry.get("repro", "onion"))
    assert flags["no_input"] == "--no-input"
    assert p.parse_args(["--no-input"]).repro_no_input is True
    assert p.parse_args(["--no-no-input"]).repro_no_input is False
    assert p.parse_args([]).repro_no_input is False
    assert p.parse_args(["--no-probes"]).repro_probes is False
    assert p.parse_args(["--probes"]).repro_probes is True
    p, _, _ = parser_for(registry.get("model", "repeat-gru"))
    assert p.parse_args(["--no-input"]).model_no_input is True


def fake_entry(kind: str, options: dict[str, type]) -> registry.Entry:
    """An entry whose keyword options have the given names and types (no registration)."""
    positional = {"model": [], "analysis": ["the_model", "the_hook", "the_data"], "repro": ["the_dir"]}[kind]

    def fn(*args, **kwargs):
        return kwargs

    params = [inspect.Parameter(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in positional]
    defaults = {bool: False, int: 0, str: "cpu"}
    params += [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=defaults[t], annotation=t)
        for n, t in options.items()
    ]
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = dict(options)
    return registry.Entry(kind, "fake", fn, "", "tests", registry.options_of(fn, skip=len(positional)))


RESERVED = ["device", "out", "overwrite", "model", "hook", "checkpoint", "help", "input", "no_input", "h"]
NAMES = st.one_of(
    st.sampled_from(RESERVED),
    st.from_regex(r"[a-z][a-z0-9]{0,6}(_[a-z0-9]{1,4})?", fullmatch=True).filter(
        lambda n: not keyword.iskeyword(n)  # a parameter name, so never `as`, `if`, ...
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["model", "analysis", "repro"]),
    options=st.dictionaries(NAMES, st.sampled_from([bool, int, str]), max_size=6),
)
def test_option_names_that_clash_get_a_free_flag_that_works(kind, options):
    entry = fake_entry(kind, options)
    parser, flags, prefix = parser_for(entry)  # never argparse's "conflicting option string"
    assert set(flags) == set(options)
    for name, tp in options.items():
        flag = flags[name]
        if tp is bool:
            assert getattr(parser.parse_args([flag]), prefix + name) is True
            assert getattr(parser.parse_args(["--no-" + flag[2:]]), prefix + name) is False
        elif tp is int:
            assert getattr(parser.parse_args([flag, "7"]), prefix + name) == 7
        else:
            assert getattr(parser.parse_args([f"{flag}=cpu"]), prefix + name) == "cpu"
    own = parser.parse_args(["--device", "cpu"] if kind != "repro" else [])
    if kind != "repro":  # the command's own --device is not an option's
        assert own.device == "cpu"
        for name, tp in options.items():
            if tp is int:
                ns = parser.parse_args(["--device", "meta", flags[name], "5"])
                assert ns.device == "meta" and getattr(ns, prefix + name) == 5


def test_analysis_with_a_device_option_runs(tmp_path, capsys):
    seen = {}

    @registry.register_analysis("test-device-opt")
    def with_device(model, hook, data, *, device: str = "cpu", out: int = 1):
        seen.update(device=device, out=out)
        return {"device": device}

    try:
        code = cli.main(
            [
                "run",
                "test-device-opt",
                "--model",
                "toy-relu",
                "--hook",
                "hook_hidden",
                "--analysis-device",
                "meta",
                "--analysis-out",
                "3",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        assert code == 0 and seen == {"device": "meta", "out": 3}
        cli.main(["analyses"])
        assert "--analysis-device" in capsys.readouterr().out
    finally:
        registry._REGISTRY["analysis"].pop("test-device-opt", None)


# ---------------------------------------------------------------------- devices
@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=12), st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:7", "mps", "meta", "xpu"])
    )
)
def test_device_strings_give_a_device_or_a_clear_error(text):
    try:
        device = checks.torch_device(text)
    except ValueError as e:
        assert repr(text) in str(e) or str(text) in str(e)
    else:
        torch.empty(1, device=device)  # it is really there


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    ("device", "says"), [("cuda", "CUDA is not available"), ("foo", "not a torch device")]
)
def test_cli_refuses_devices_it_does_not_have(device, says, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["hooks", "toy-relu", "--device", device])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--device" in err and says in err


# ---------------------------------------------------------------------- sizes
MAY_BE_ANY = {"seed", "rotation_seed"}
INT_OPTIONS = [
    (name, o)
    for name, e in registry.entries("model").items()
    if name != "smollm2-135m"
    for o in e.options
    if o.type is int and o.name not in MAY_BE_ANY
]


@pytest.mark.parametrize(("model", "option"), INT_OPTIONS, ids=[f"{m}-{o.name}" for m, o in INT_OPTIONS])
@settings(max_examples=5, deadline=None)
@given(value=st.integers(-(10**6), 0))
def test_model_sizes_below_one_are_refused_naming_the_option(model, option, value):
    if option.name == "member" and value == 0:
        return  # member 0 is the first member
    with pytest.raises(OptionError) as e:
        registry.get("model", model).call(options={option.name: value})
    assert e.value.option == option.name and str(value) in str(e.value)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["hooks", "toy-relu", "--batch-size", "-1"], "--batch-size"),
        (["hooks", "toy-relu", "--batch-size", "0"], "--batch-size"),
        (["hooks", "repeat-gru", "--hidden-size", "-1"], "--hidden-size"),
        (["hooks", "ws-flat", "--members", "-1"], "--members"),
        (["hooks", "tiny-llama", "--vocab", "0"], "--vocab"),
        (["hooks", "tiny-llama", "--seq", "0"], "--seq"),
        (["hooks", "tiny-llama", "--d-model", "7"], "--d-model"),
        (["hooks", "toy-relu", "--feature-probability", "1.5"], "--feature-probability"),
        (
            [
                "run",
                "feature-geometry",
                "--model",
                "toy-relu",
                "--hook",
                "hook_hidden",
                "--model-batch-size",
                "-3",
            ],
            "--model-batch-size",
        ),
        (["run", "ridge-probe", "--model", "toy-relu", "--hook", "hook_hidden", "--folds", "1"], "--folds"),
        (
            ["run", "feature-dimensionality", "--model", "toy-relu", "--hook", "hook_hidden", "--tol", "-1"],
            "--tol",
        ),
        (
            ["run", "group-geometry", "--model", "toy-relu", "--hook", "hook_hidden", "--features", "0,0,1"],
            "--features",
        ),
        (
            ["run", "group-geometry", "--model", "toy-relu", "--hook", "hook_hidden", "--features", "0,9"],
            "--features",
        ),
        (
            ["run", "group-geometry", "--model", "toy-relu", "--hook", "hook_hidden", "--features", "0"],
            "--features",
        ),
        (
            ["run", "interference", "--model", "toy-relu", "--hook", "hook_hidden", "--pre-hook", "zzz"],
            "--pre-hook",
        ),
        (
            ["run", "interference", "--model", "toy-relu", "--hook", "hook_hidden", "--out-hook", ""],
            "--out-hook",
        ),
        (["hooks", "zoo-lstm", "--member", "3"], "--member"),
        (["hooks", "zoo-lstm", "--member", "-1"], "--member"),
        (
            ["run", "feature-geometry", "--model", "toy-relu", "--hook", "hook_hidden", "--scale", "0"],
            "--scale",
        ),
    ],
)
def test_cli_size_errors_name_the_flag(argv, flag, capsys, tmp_path):
    assert cli.main([*argv, *(["--out", str(tmp_path / "r")] if argv[0] == "run" else [])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {flag} " in err, err
    assert not (tmp_path / "r" / "result.json").exists()


@pytest.mark.parametrize("text", ["99999999999999999999", "-99999999999999999999", "nan", "NaN"])
def test_numbers_no_option_can_mean_are_refused_while_parsing(text, capsys):
    with pytest.raises(SystemExit):
        cli.main(["hooks", "toy-relu", "--batch-size" if "9" in text else "--feature-probability", text])
    err = capsys.readouterr().err
    assert "out of range" in err or "expected a number" in err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"analysis_device": str, "device": str}, {"device": "--analysis-analysis-device"}),
        ({"input": bool, "no_input": bool}, {"input": "--input", "no_input": "--analysis-no-input"}),
        ({"no_input": bool, "input": bool}, {"no_input": "--no-input", "input": "--analysis-input"}),
    ],
)
def test_flags_taken_twice_still_get_a_free_flag(options, expected):
    _, flags, _ = parser_for(fake_entry("analysis", options))
    assert {k: flags[k] for k in expected} == expected
