"""Name similarity used to rank rename candidates."""

from __future__ import annotations

from actors.healer.similarity import ranked, similarity, words


def test_words_split_snake_camel_and_acronyms() -> None:
    assert words("fetchUserByID") == ("fetch", "user", "by", "id")
    assert words("HTTPServer_v2") == ("http", "server", "v", "2")


def test_similar_names_outscore_unrelated_ones() -> None:
    # Given a typo, a reordering, an abbreviation and an unrelated name
    # Then the related ones pass the default threshold and the unrelated one does not
    assert similarity("db_sesion", "db_session") > 0.7
    assert similarity("total_price", "price_total") > 0.6
    assert similarity("qty", "quantity") >= 0.6
    assert similarity("db_session", "cache") < 0.3
    assert similarity("HTTPServer", "http_server") == 0.95


def test_ranked_is_best_first_excludes_the_target_and_applies_the_threshold() -> None:
    # Given candidates including the target itself
    result = ranked("get_usr", ["get_user", "get_users", "get_usr", "delete_all"], limit=5)
    # Then the target and unrelated names are dropped and the closest comes first
    assert [name for name, _ in result] == ["get_user", "get_users"]
