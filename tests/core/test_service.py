"""`ccsm_core.service.PrefixRouter`: it skips only routes that cannot match, so it routes exactly as Starlette's
router does, on every path of the real route table and on the odd ones an attacker would try."""

from __future__ import annotations

import itertools

import pytest
from starlette.routing import BaseRoute, Match, Route

import devserver
from ccsm_core.service import PrefixRouter
from ccsm_core.settings import Settings


@pytest.fixture(scope="module")
def router(settings: Settings) -> PrefixRouter:
    app = devserver.create_app(settings)
    assert isinstance(app.router, PrefixRouter)
    return app.router


def _paths(routes: list[BaseRoute]) -> list[str]:
    fills = ("1", "abc", "-3", "1.5", "%20", "")
    out = ["/", "", "//api/users", "/api//users", "/api", "/api/", "/API", "/health/", "/nothing/here"]
    for r in routes:
        template = getattr(r, "path", "")
        for fill in fills:
            path = template
            while "{" in path:
                head, _, tail = path.partition("{")
                path = head + fill + tail.split("}", 1)[1]
            for variant in (path, path.upper(), path.swapcase(), path + "/", path + "//", path + "/x", path[:-1]):
                out.append(variant)
        # Unicode case folding: Python's case-insensitive regexes match these to ASCII letters.
        out += [template.replace("s", "\u017f"), template.replace("k", "\u212a"), template.replace("i", "\u0130")]
    return out


def test_the_routes_it_skips_never_match_any_path_or_method(router: PrefixRouter) -> None:
    checked = 0
    for path, method in itertools.product(_paths(router.routes), ("GET", "POST", "DELETE")):
        kept = {id(r) for r in router.candidates(path)}
        for r in router.routes:
            if id(r) in kept:
                continue
            match, _ = r.matches({"type": "http", "path": path, "method": method, "root_path": ""})
            assert match is Match.NONE, (path, method, getattr(r, "path", r))
            checked += 1
    assert checked > 10_000  # the pruning is real: most routes are skipped for most paths


def test_a_static_path_is_tried_against_few_routes(router: PrefixRouter) -> None:
    every = len(router.routes)
    candidates = router.candidates("/api/time-tracking/metrics")
    assert 1 <= len(candidates) < every / 5
    assert any(isinstance(r, Route) and r.path == "/api/time-tracking/metrics" for r in candidates)
    assert len(router.candidates("/api/cu\u017ftomers")) == every  # a non-ASCII path: Starlette's full loop
