"""WWW-Authenticate parsing follows RFC 7235, including the awkward cases registries send."""

from __future__ import annotations

from hatch_jib.registry.auth import parse_challenges


def test_bearer_challenge_yields_realm_service_and_scope() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/python:pull"'
    )

    [challenge] = parse_challenges(header)

    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scope == "repository:library/python:pull"


def test_quoted_values_keep_their_commas_and_escapes() -> None:
    header = 'Bearer realm="https://a.example/t",scope="repository:x:pull,push",note="a \\"q\\""'

    [challenge] = parse_challenges(header)

    assert challenge.scope == "repository:x:pull,push"
    assert challenge.params["note"] == 'a "q"'


def test_several_challenges_in_one_header_are_split_at_the_right_comma() -> None:
    header = 'Basic realm="basic realm", Bearer realm="https://t.example/token", service=reg'

    challenges = parse_challenges(header)

    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].realm == "basic realm"
    assert challenges[1].params == {"realm": "https://t.example/token", "service": "reg"}


def test_challenges_in_separate_header_values_are_all_returned() -> None:
    challenges = parse_challenges(['Basic realm="r"', 'Bearer realm="https://t/x"'])

    assert [(c.scheme, c.realm) for c in challenges] == [("basic", "r"), ("bearer", "https://t/x")]


def test_bare_basic_has_no_parameters() -> None:
    assert [(c.scheme, dict(c.params)) for c in parse_challenges("Basic")] == [("basic", {})]


def test_bare_scheme_followed_by_another_challenge() -> None:
    challenges = parse_challenges('Negotiate, Basic realm="x"')

    assert [(c.scheme, c.realm) for c in challenges] == [("negotiate", None), ("basic", "x")]


def test_missing_service_and_scope_are_none() -> None:
    [challenge] = parse_challenges('Bearer realm="https://t.example/token"')

    assert (challenge.service, challenge.scope) == (None, None)


def test_realm_with_a_query_is_kept_whole() -> None:
    [challenge] = parse_challenges('Bearer realm="https://t.example/token?account=a&x=1",service=s')

    assert challenge.realm == "https://t.example/token?account=a&x=1"
    assert challenge.service == "s"


def test_scheme_and_parameter_names_are_case_insensitive_and_spaces_tolerated() -> None:
    [challenge] = parse_challenges('BEARER  Realm = "https://t/x" ,  Service = "svc"')

    assert challenge.scheme == "bearer"
    assert (challenge.realm, challenge.service) == ("https://t/x", "svc")


def test_token68_challenge_is_recognised() -> None:
    [challenge] = parse_challenges("Custom abc123==")

    assert (challenge.scheme, challenge.token68, dict(challenge.params)) == (
        "custom",
        "abc123==",
        {},
    )


def test_insufficient_scope_error_is_exposed() -> None:
    [challenge] = parse_challenges(
        'Bearer realm="https://t/x",service="s",scope="repository:a:push",error="insufficient_scope"'
    )

    assert challenge.error == "insufficient_scope"


def test_garbage_yields_no_challenges() -> None:
    assert parse_challenges(["", " , ,", '"quoted"']) == []
