"""Business rules and explanations over real HTTP: filters, hidden items, paging, diversity, `explain`.

One server from the repo over a copy of the MovieLens feature store, refreshing every half
second, so a change to ``hidden_items.txt`` is picked up while it runs.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.batch import recommend_all
from serving.runtime import Runtime
from stages.rules import HIDDEN_ITEMS_FILE
from tests.support import KNOWN_USER, answer_of, post, serve, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rules_server(movielens_run, tmp_path_factory):
    run, trained = movielens_run
    store = tmp_path_factory.mktemp("rules") / "feature_store"
    shutil.copytree(trained / "feature_store", store)
    env = {"RECSYS_RANKER_TAG": run.ranker_tag, "RECSYS_FEATURE_STORE": str(store), "RECSYS_REFRESH_SECONDS": "0.5"}
    with serve("service:Recommender", env) as live, live.client() as http:
        yield http, store, run.ranker_tag


@pytest.fixture(scope="module")
def http(rules_server):
    return rules_server[0]


@pytest.fixture(scope="module")
def items(offline):
    """The catalogue's attribute masks and the item index, to check answers against."""
    return offline.view.catalogue, offline.candidates.item_index


def ids(body: dict) -> list[str]:
    return [r["item_id"] for r in body["recommendations"]]


def has(items, attribute: str, value: str, item_id: str) -> bool:
    catalogue, index = items
    return bool(catalogue.matrices[attribute][index[item_id], catalogue.values[attribute][value]])


def year(items, item_id: str) -> float:
    catalogue, index = items
    return catalogue.numbers["release_year"][index[item_id]]


def test_filters_keep_only_matching_items_and_k_of_them(http, items):
    body = {
        "user_id": KNOWN_USER,
        "k": 10,
        "filters": {"genres": {"include": ["Comedy"]}, "release_year": {"gte": 1990}},
    }
    status, answer = post(http, "/recommend", body)
    assert status == 200 and answer["strategy"] == "two_stage" and len(ids(answer)) == 10
    assert all(has(items, "genres", "Comedy", i) and year(items, i) >= 1990 for i in ids(answer))
    assert answer["message"].startswith("filters allow ")
    status, answer = post(http, "/recommend", {"user_id": KNOWN_USER, "filters": {"genres": {"exclude": ["Drama"]}}})
    assert status == 200 and not any(has(items, "genres", "Drama", i) for i in ids(answer))


def test_a_filter_leaving_one_percent_of_the_catalogue_still_returns_k_matching_items(http, items):
    catalogue, _ = items
    noir = int(catalogue.mask((("genres", _include("Film-Noir")),)).sum())
    assert noir / catalogue.n_items < 0.015  # 24 of 1682
    for user in (KNOWN_USER, "never-seen-visitor"):
        status, answer = post(
            http, "/recommend", {"user_id": user, "k": 10, "filters": {"genres": {"include": ["Film-Noir"]}}}
        )
        assert status == 200 and len(ids(answer)) == 10
        assert all(has(items, "genres", "Film-Noir", i) for i in ids(answer))


def test_a_filtered_catalogue_smaller_than_k_gives_all_of_it_and_says_so(http, items):
    body = {"user_id": "never-seen-visitor", "k": 100, "filters": {"genres": {"include": ["Film-Noir"]}}}
    status, answer = post(http, "/recommend", body)
    assert status == 200 and len(ids(answer)) == 24 and "only 24 items left" in answer["message"]


@pytest.mark.parametrize(
    ("filters", "loc"),
    [
        ({"colour": {"include": ["red"]}}, ["filters", "colour"]),
        ({"genres": {"include": ["comedy"]}}, ["filters", "genres", "include"]),
        ({"genres": {"gte": 3}}, ["filters", "genres"]),
        ({"release_year": {"include": ["1990"]}}, ["filters", "release_year"]),
        ({"release_year": {"gte": "1990"}}, ["filters", "release_year", "gte", "float"]),
    ],
)
def test_filters_that_cannot_apply_are_a_400_naming_the_field(http, filters, loc):
    status, answer = post(http, "/recommend", {"user_id": KNOWN_USER, "filters": filters})
    assert status == 400 and answer["detail"][0]["loc"] == loc
    status, answer = post(
        http, "/recommend_batch", {"requests": [{"user_id": "1"}, {"user_id": "2", "filters": filters}]}
    )
    assert status == 400 and answer["detail"][0]["loc"][:2] == ["requests", 1]
    status, answer = post(http, "/similar_items", {"item_id": "50", "filters": filters})
    assert status == 400 and answer["detail"][0]["loc"][: len(loc)] == loc


def test_a_request_with_a_bad_filter_fails_alone_however_requests_are_batched(http):
    # Requests arriving together share pipeline calls; one client's unknown genre used to fail them all.
    bad = {"user_id": "anon", "k": 3, "filters": {"genres": {"include": ["NotAGenre"]}}}
    good = {"user_id": KNOWN_USER, "k": 5}
    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(post, http, "/recommend", bad if i % 4 == 0 else good) for i in range(240)]
        answers = [(i % 4 == 0, *f.result()) for i, f in enumerate(futures)]
    assert {status for is_bad, status, _ in answers if not is_bad} == {200}
    refused = {(status, tuple(answer["detail"][0]["loc"])) for is_bad, status, answer in answers if is_bad}
    assert refused == {(400, ("filters", "genres", "include"))}
    expected = ids(post(http, "/recommend", good)[1])
    assert all(ids(answer) == expected for is_bad, _, answer in answers if not is_bad)


def test_pages_are_disjoint_and_slices_of_one_ranking(http):
    for user in (KNOWN_USER, "never-seen-visitor"):
        answers = [post(http, "/recommend", {"user_id": user, "k": 10, "offset": o})[1] for o in (0, 10, 20)]
        pages = [ids(answer) for answer in answers]
        whole = ids(post(http, "/recommend", {"user_id": user, "k": 30})[1])
        assert pages[0] + pages[1] + pages[2] == whole and len(set(whole)) == 30
        # Ranks are places in the whole ranking: the pages' ranks join into 1..30 too.
        assert [r["rank"] for answer in answers for r in answer["recommendations"]] == list(range(1, 31))
        assert pages[0] == ids(post(http, "/recommend", {"user_id": user, "k": 10})[1])


def test_pages_partition_one_ranking_down_to_the_end_of_the_pool(http):
    """Offsets 0 to 290 in tens, and k = 100 at 0, 100 and 200: one ranking, no item twice (pages overlapped when
    the candidate pool grew with the offset); past the pool a page is short and says so."""
    tens = [ids(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10, "offset": o})[1]) for o in range(0, 300, 10)]
    hundreds = [ids(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 100, "offset": o})[1]) for o in (0, 100, 200)]
    flat = [item for page in tens for item in page]
    assert len(flat) == len(set(flat)) and flat == [item for page in hundreds for item in page]
    assert 100 < len(flat) < 300  # the pool: 100 ALS candidates plus the other sources' own, seen items removed
    status, past = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10, "offset": 290})
    assert status == 200 and past["recommendations"] == [] and "only 0 items left" in past["message"]
    assert f"the ranking ends with its {len(flat)} candidates" in past["message"]


def test_diversity(http, offline):
    plain = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1]
    assert answer_of(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10, "diversity": 0})[1]) == answer_of(plain)
    diverse = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10, "diversity": 0.5})[1]
    vectors = offline.pipeline.unit_vectors
    index = offline.candidates.item_index

    def ild(body: dict) -> float:
        v = vectors[[index[i] for i in ids(body)]]
        sims = v @ v.T
        return 1 - (sims.sum() - np.trace(sims)) / (len(v) * (len(v) - 1))

    assert len(ids(diverse)) == 10 and ids(diverse)[0] == ids(plain)[0] and ild(diverse) > ild(plain)
    assert post(http, "/recommend", {"user_id": KNOWN_USER, "diversity": 1.5})[0] == 400


def test_explanations_name_the_users_own_items_and_the_rankers_reasons(http, offline):
    user = offline.candidates.user_index[KNOWN_USER]
    history = set(offline.candidates.item_ids[offline.candidates.seen_items(user)])
    recent = ["50", "172"]
    body = {"user_id": KNOWN_USER, "k": 10, "explain": True, "recent_items": recent}
    status, answer = post(http, "/recommend", body)
    assert status == 200
    plain = post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10, "recent_items": recent})[1]
    assert ids(answer) == ids(plain)  # explaining changes nothing in the list
    for item in answer["recommendations"]:
        assert 1 <= len(item["because"]) <= 3 and len(item["reasons"]) >= 1
        assert {b["item_id"] for b in item["because"]} <= history | set(recent)
        assert all(b["title"] for b in item["because"]) and all(isinstance(r, str) and r for r in item["reasons"])
    assert "because" not in plain["recommendations"][0]  # off by default: the answer is what it was
    status, cold = post(http, "/recommend", {"user_id": "never-seen-visitor", "k": 3, "explain": True})
    assert status == 200 and cold["strategy"] == "popular"
    assert all(r["because"] == [] and r["reasons"][0].startswith("most popular in") for r in cold["recommendations"])


def test_similar_items_take_filters(http, items):
    status, answer = post(
        http, "/similar_items", {"item_id": "50", "k": 5, "filters": {"genres": {"include": ["Comedy"]}}}
    )
    assert status == 200 and len(ids(answer)) == 5 and all(has(items, "genres", "Comedy", i) for i in ids(answer))


def test_hidden_items_never_appear_on_any_path_and_are_picked_up_without_restart(rules_server, offline):
    http, store, ranker_tag = rules_server
    known = ids(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1])
    cold = ids(post(http, "/recommend", {"user_id": "never-seen-visitor", "k": 10})[1])
    similar = ids(post(http, "/similar_items", {"item_id": "50", "k": 10})[1])
    hidden = {*known[:3], *cold[:3], *similar[:3]}
    (store / HIDDEN_ITEMS_FILE).write_text("# withdrawn\n" + "\n".join(sorted(hidden)) + "\n")
    try:
        assert wait_for(lambda: not hidden & set(ids(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1])))
        answers = [
            post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1],
            post(http, "/recommend", {"user_id": "never-seen-visitor", "k": 10})[1],
            post(http, "/recommend", {"user_id": "visitor", "k": 10, "recent_items": ["50", "172"]})[1],
            post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10, "exclude_seen": False})[1],
            post(http, "/similar_items", {"item_id": "50", "k": 10})[1],
            *post(http, "/recommend_batch", {"requests": [{"user_id": "1"}, {"user_id": "nobody"}]})[1]["results"],
        ]
        for answer in answers:
            assert len(ids(answer)) == 10 and not hidden & set(ids(answer))
        # Hiding promises withdrawal, not a shifted list: hidden items are never candidates, so every source's
        # ranks (ranker features) change and the others may reorder. What is promised, and checked exactly:
        # the batch CLI, reading the same list next to the same feature store, gives the same answers in order.
        batch = recommend_all(Runtime.from_store(ranker_tag, feature_store=str(store)), [KNOWN_USER, "1", "nobody"], 10)
        assert batch.num_rows == 30 and not hidden & set(batch.column("item_id").to_pylist())
        offline_lists: dict[str, list[str]] = {}
        for row in batch.sort_by([("user_id", "ascending"), ("rank", "ascending")]).to_pylist():
            offline_lists.setdefault(row["user_id"], []).append(row["item_id"])
        assert offline_lists[KNOWN_USER] == ids(answers[0])
        assert [offline_lists["1"], offline_lists["nobody"]] == [ids(a) for a in answers[5:]]
    finally:
        (store / HIDDEN_ITEMS_FILE).unlink()
    assert wait_for(lambda: ids(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1]) == known)


def _include(value: str):
    from stages.rules import AttributeFilter

    return AttributeFilter(include=(value,))


def test_hidden_items_read_ids_as_the_api_does_and_a_bad_file_keeps_the_list(rules_server):
    """A byte-order mark and ``100.0`` hide what they name; random bytes keep the list hidden before, and say so."""
    http, store, _ = rules_server
    known = ids(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1])
    first, second = known[0], known[1]
    path = store / HIDDEN_ITEMS_FILE
    path.write_bytes(b"\xef\xbb\xbf" + f"{first}\n {second}.0 \n".encode())  # BOM, then an id as a float
    try:
        assert wait_for(lambda: not {first, second} & set(ids(post(http, "/recommend", {"user_id": KNOWN_USER})[1])))
        path.write_bytes(bytes(range(128, 256)) * 4)  # not text
        assert wait_for(lambda: post(http, "/model_info", {})[1]["hidden_items_error"] is not None)
        error = post(http, "/model_info", {})[1]["hidden_items_error"]
        assert "not UTF-8 text" in error and "/" not in error and "Error" not in error
        assert not {first, second} & set(ids(post(http, "/recommend", {"user_id": KNOWN_USER})[1]))  # still hidden
    finally:
        path.unlink()
    assert wait_for(lambda: ids(post(http, "/recommend", {"user_id": KNOWN_USER, "k": 10})[1]) == known)
    assert post(http, "/model_info", {})[1]["hidden_items_error"] is None
