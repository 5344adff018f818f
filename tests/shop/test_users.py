"""The users service over HTTP, against a real database, as its own role."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import jwt
import psycopg
import pytest

from pgcourier import Courier
from services.shared.auth import Principal, SigningKey, token_issue
from services.shared.settings import ServiceSettings
from services.users.app import admin_ensure, create_app
from tests.helpers import wait_until
from tests.shop.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    TEST_PUBLIC_KEYS,
    TEST_SIGNING_KEY,
    serve_app,
    service_in_both_topologies,
    token_for,
)

PASSWORD = "correct horse battery"


shop_url = service_in_both_topologies("users", "it sends nothing another service's tests need")


@pytest.fixture
async def client(
    settings_for: Callable[[str], ServiceSettings],
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(create_app(settings_for("users"))) as c:
        yield c


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    response = await client.post("/users/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    response = await client.post("/users/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def accounts(shop_url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(shop_url) as conn:
        return conn.execute(
            "SELECT email, password_hash, role FROM users.account ORDER BY email"
        ).fetchall()


async def test_register_login_and_me_return_the_account_with_customer_permissions(
    client: httpx.AsyncClient,
) -> None:
    created = await register(client, "  Alice@Example.COM ")
    assert created["email"] == "alice@example.com"
    assert created["role"] == "customer"
    uuid.UUID(created["user_id"])

    response = await client.post(
        "/users/login", json={"email": "ALICE@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert response.headers["cache-control"] == "no-store"
    key = TEST_SIGNING_KEY
    assert jwt.get_unverified_header(body["token"]) == {
        "alg": "EdDSA",
        "kid": key.kid,
        "typ": "JWT",
    }
    claims = jwt.decode(body["token"], key.public_key, algorithms=["EdDSA"])
    assert (claims["sub"], claims["role"]) == (created["user_id"], "customer")
    assert claims["exp"] - claims["iat"] == 300

    me = await client.get("/users/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json()["user_id"] == created["user_id"]
    assert me.json()["email"] == "alice@example.com"
    assert me.json()["permissions"] == [
        "products:read",
        "orders:place",
        "orders:read_own",
        "payments:read_own",
    ]


async def test_registering_an_email_twice_is_409_whatever_its_case(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    await register(client, "bob@example.com")
    response = await client.post(
        "/users/register", json={"email": "BOB@example.com ", "password": "another password"}
    )
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert [a[0] for a in accounts(shop_url)] == [ADMIN_EMAIL, "bob@example.com"]


async def test_concurrent_registrations_of_one_email_create_one_account(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    responses = await asyncio.gather(
        *(
            client.post("/users/register", json={"email": "race@x.io", "password": PASSWORD})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert [a[0] for a in accounts(shop_url)].count("race@x.io") == 1


async def test_wrong_password_and_unknown_email_get_the_same_401(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "carol@example.com")
    wrong = await client.post(
        "/users/login", json={"email": "carol@example.com", "password": "not her password"}
    )
    unknown = await client.post(
        "/users/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "token" not in wrong.json()


@pytest.mark.parametrize(
    "password",
    [
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        "$2b$12$abcdefghijklmnopqrstuuQvA3nZ1Y0y4ZbH2c5tEHcmW4mZ7pQ6a",
        "$2y$10$abcdefghijklmnopqrstuu",
        "pbkdf2_sha256$600000$salt$hash",
        "$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA",
    ],
)
async def test_a_pre_hashed_password_is_refused_naming_the_password_field(
    client: httpx.AsyncClient, shop_url: str, password: str
) -> None:
    response = await client.post(
        "/users/register", json={"email": "dave@example.com", "password": password}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "password"
    assert "dave@example.com" not in [a[0] for a in accounts(shop_url)]


async def test_a_password_hash_field_is_refused_as_unknown(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users/register",
        json={"email": "eve@example.com", "password": PASSWORD, "password_hash": "$argon2id$x"},
    )
    assert response.status_code == 422
    assert response.json()["field"] == "password_hash"


async def test_the_password_is_stored_as_an_argon2_hash_not_as_text(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    await register(client, "frank@example.com")
    [(_, stored, _)] = [a for a in accounts(shop_url) if a[0] == "frank@example.com"]
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_the_configured_admin_can_list_users_and_a_customer_gets_403(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "grace@example.com")
    admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = (await client.get("/users/me", headers=admin)).json()
    assert me["role"] == "admin"
    assert {"users:manage", "orders:read_all", "products:read"} <= set(me["permissions"])

    listed = await client.get("/users", headers=admin)
    assert listed.status_code == 200
    assert {u["email"] for u in listed.json()["users"]} == {ADMIN_EMAIL, "grace@example.com"}
    assert all("password_hash" not in u for u in listed.json()["users"])
    page = await client.get("/users", params={"limit": 1, "offset": 1}, headers=admin)
    assert [u["email"] for u in page.json()["users"]] == ["grace@example.com"]

    customer = await login(client, "grace@example.com")
    assert (await client.get("/users", headers=customer)).status_code == 403
    role = await client.put(
        f"/users/{me['user_id']}/role", json={"role": "customer"}, headers=customer
    )
    assert role.status_code == 403


async def test_a_bad_page_size_is_422_naming_the_parameter(client: httpx.AsyncClient) -> None:
    admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    response = await client.get("/users", params={"limit": "0"}, headers=admin)
    assert response.status_code == 422
    assert response.json()["field"] == "limit"


async def test_a_customer_sees_themself_but_another_user_is_404(
    client: httpx.AsyncClient,
) -> None:
    heidi = await register(client, "heidi@example.com")
    ivan = await register(client, "ivan@example.com")
    as_heidi = await login(client, "heidi@example.com")
    own = await client.get(f"/users/{heidi['user_id']}", headers=as_heidi)
    assert own.status_code == 200
    assert own.json()["email"] == "heidi@example.com"
    other = await client.get(f"/users/{ivan['user_id']}", headers=as_heidi)
    missing = await client.get(f"/users/{uuid.uuid4()}", headers=as_heidi)
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json()
    admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert (await client.get(f"/users/{ivan['user_id']}", headers=admin)).status_code == 200


async def test_a_user_id_that_is_not_a_uuid_is_404_not_500(client: httpx.AsyncClient) -> None:
    admin = token_for(str(uuid.uuid4()), "admin")
    assert (await client.get("/users/not-a-uuid", headers=admin)).status_code == 404
    response = await client.put("/users/42/role", json={"role": "admin"}, headers=admin)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/users/me"),
        ("GET", "/users"),
        ("GET", "/users/1f6b3c2e-9a4d-4e7f-b8c1-0d2e5a7f9b31"),
        ("PUT", "/users/7c9e2d4a-3b1f-4a68-9e05-6f8d1b2c3a47/role"),
    ],
)
async def test_requests_without_a_token_get_401(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"role": "admin"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_expired_and_forged_tokens_get_401(client: httpx.AsyncClient) -> None:
    user = await register(client, "judy@example.com")
    who = Principal(user["user_id"], "admin")
    expired = token_issue(who, key=TEST_SIGNING_KEY, ttl_s=-60)
    forged = token_issue(who, key=SigningKey.generate(), ttl_s=600)
    none_alg = jwt.encode({"sub": user["user_id"], "role": "admin", "exp": 2**31}, None, "none")
    for token in (expired, forged, none_alg, "garbage"):
        response = await client.get("/users", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token


async def test_malformed_json_is_400_and_wrong_types_are_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    broken = await client.post(
        "/users/register", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"] == "malformed_json"
    for body, field in [
        ({"email": 7, "password": PASSWORD}, "email"),
        ({"email": "kim@example.com", "password": 12345678}, "password"),
        ({"email": "kim@example.com", "password": "short"}, "password"),
        ({"email": "kim@example.com"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "kim@localhost", "password": PASSWORD}, "email"),
        ({"email": "k im@example.com", "password": PASSWORD}, "email"),
    ]:
        response = await client.post("/users/register", json=body)
        assert response.status_code == 422, body
        assert response.json()["field"] == field, body
    login_types = await client.post("/users/login", json={"email": ["x"], "password": PASSWORD})
    assert login_types.status_code == 422
    assert login_types.json()["field"] == "email"


async def test_an_admin_promotes_a_customer_whose_next_token_carries_the_new_role(
    client: httpx.AsyncClient,
) -> None:
    leo = await register(client, "leo@example.com")
    as_leo = await login(client, "leo@example.com")
    admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    bad = await client.put(f"/users/{leo['user_id']}/role", json={"role": "root"}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["field"] == "role"

    promoted = await client.put(
        f"/users/{leo['user_id']}/role", json={"role": "admin"}, headers=admin
    )
    assert promoted.status_code == 200
    assert promoted.json()["role"] == "admin"
    # The token issued before the change is revoked: the next one has the new role.
    assert (await client.get("/users/me", headers=as_leo)).status_code == 401
    fresh = await login(client, "leo@example.com")
    me = (await client.get("/users/me", headers=fresh)).json()
    assert me["role"] == "admin"
    assert "users:manage" in me["permissions"]
    assert (await client.get("/users", headers=fresh)).status_code == 200

    unknown = await client.put(f"/users/{uuid.uuid4()}/role", json={"role": "admin"}, headers=admin)
    assert unknown.status_code == 404


async def test_the_last_admin_cannot_be_demoted(client: httpx.AsyncClient) -> None:
    admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin_id = (await client.get("/users/me", headers=admin)).json()["user_id"]
    alone = await client.put(f"/users/{admin_id}/role", json={"role": "customer"}, headers=admin)
    assert alone.status_code == 409
    assert (await client.get("/users", headers=admin)).status_code == 200


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    first = (await client.get("/users/me", headers=admin)).json()["user_id"]
    second = (await register(client, "mia@example.com"))["user_id"]
    promoted = await client.put(f"/users/{second}/role", json={"role": "admin"}, headers=admin)
    assert promoted.status_code == 200

    def demote(user_id: str) -> asyncio.Task[httpx.Response]:
        path = f"/users/{user_id}/role"
        return asyncio.create_task(client.put(path, json={"role": "customer"}, headers=admin))

    # Force the interleaving that breaks a check-then-update: the first demotion
    # starts (and is held up) before the second one runs and commits.
    async with await psycopg.AsyncConnection.connect(shop_url) as holder:
        await holder.execute("SELECT 1 FROM users.account WHERE user_id = %s FOR UPDATE", [first])
        demote_first = demote(first)
        await until_blocked(shop_url, 1)
        demote_second = demote(second)
        await asyncio.wait({demote_second}, timeout=1)
        await holder.rollback()
    results = [await demote_first, await demote_second]
    assert sorted(r.status_code for r in results) == [200, 409]
    assert [a[2] for a in accounts(shop_url)].count("admin") == 1


async def until_blocked(shop_url: str, sessions: int, timeout: float = 10) -> None:
    """Waits until that many users_svc sessions wait for a lock."""
    async with await psycopg.AsyncConnection.connect(shop_url, autocommit=True) as conn:

        async def blocked() -> bool:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND usename = 'users_svc'"
                " AND wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            return row is not None and row[0] >= sessions

        await wait_until(blocked, within=timeout, interval=0.02)


async def test_the_configured_admin_is_created_once_and_kept_across_restarts(
    settings_for: Callable[[str], ServiceSettings], shop_url: str
) -> None:
    settings = settings_for("users")
    async with serve_app(create_app(settings)) as first:
        original = accounts(shop_url)
        assert [(a[0], a[2]) for a in original] == [(ADMIN_EMAIL, "admin")]
        await login(first, ADMIN_EMAIL, ADMIN_PASSWORD)
    async with (
        serve_app(create_app(settings)) as second,
        serve_app(create_app(settings)),
    ):
        # A restart neither duplicates the admin nor re-hashes (resets) its password.
        assert accounts(shop_url) == original
        await login(second, ADMIN_EMAIL, ADMIN_PASSWORD)


async def test_concurrent_first_starts_race_to_one_admin(
    settings_for: Callable[[str], ServiceSettings], shop_url: str
) -> None:
    settings = settings_for("users")
    async with Courier(settings.database_url) as courier:
        await asyncio.gather(*(admin_ensure(courier, settings) for _ in range(4)))
    assert [(a[0], a[2]) for a in accounts(shop_url)] == [(ADMIN_EMAIL, "admin")]


async def test_without_configured_admin_no_account_is_created(
    settings_for: Callable[[str], ServiceSettings], shop_url: str
) -> None:
    settings = settings_for("users")
    bare = ServiceSettings(
        service="users",
        database_url=settings.database_url,
        token_keys=TEST_PUBLIC_KEYS,
        service_secret=settings.service_secret,
        signing_key=TEST_SIGNING_KEY,
    )
    async with serve_app(create_app(bare)) as c:
        assert (await c.get("/health")).status_code == 200
    assert accounts(shop_url) == []


# -- Idempotency-Key ---------------------------------------------------------------


async def test_a_retried_registration_with_its_key_returns_the_first_answer(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    body = {"email": "keyed@example.com", "password": PASSWORD}
    headers = {"Idempotency-Key": "reg-1"}
    first = await client.post("/users/register", json=body, headers=headers)
    assert first.status_code == 201
    retry = await client.post("/users/register", json=body, headers=headers)
    # Not the 409 a second registration of the email gets: the first answer.
    assert (retry.status_code, retry.json()) == (201, first.json())
    assert retry.headers["idempotent-replayed"] == "true"
    assert [a[0] for a in accounts(shop_url)].count("keyed@example.com") == 1
    other = {"email": "other@example.com", "password": PASSWORD}
    refused = await client.post("/users/register", json=other, headers=headers)
    assert refused.status_code == 422 and refused.json()["error"] == "idempotency_key_reused"
    assert "other@example.com" not in [a[0] for a in accounts(shop_url)]
    # The password is not kept in the clear, nor as a plain hash of the body.
    with psycopg.connect(shop_url) as conn:
        stored = conn.execute(
            "SELECT request_hash, body::text FROM users.idempotency_key"
        ).fetchall()
    assert len(stored) == 1 and PASSWORD not in stored[0][1]


# -- password policy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("password", "at least 10"),
        ("12345678", "at least 10"),
        ("1234567890", "common"),
        ("QwertyUiop", "common"),  # the list is compared without case
        ("password1234", "common"),
        ("x" * 257, "at most 256"),
        ("Pat@Example.com", "email"),
        ("pat@example.com", "email"),
    ],
)
async def test_a_weak_password_is_refused_at_registration_and_creates_nothing(
    client: httpx.AsyncClient, shop_url: str, password: str, says: str
) -> None:
    response = await client.post(
        "/users/register", json={"email": "pat@example.com", "password": password}
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "password"
    assert says in response.json()["message"]
    assert password not in response.json()["message"]  # nor is it repeated back
    assert [email for email, _, _ in accounts(shop_url)] == [ADMIN_EMAIL]


async def test_a_long_uncommon_password_is_accepted(client: httpx.AsyncClient) -> None:
    await register(client, "quinn@example.com", "x" * 256)
    await login(client, "quinn@example.com", "x" * 256)


def test_the_common_password_list_is_the_shipped_twenty_thousand() -> None:
    from services.users import password_policy

    common = password_policy.common_passwords()
    assert len(common) > 19_000
    assert {"password", "123456", "qwertyuiop"} <= common
    assert all(p == p.lower() for p in common)


# -- login throttling -----------------------------------------------------------------


async def fail_login(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/users/login", json={"email": email, "password": "wrong guess!"})


async def test_the_sixth_failed_login_within_the_window_is_429_even_with_the_right_password(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "ivy@example.com")
    for _ in range(5):
        assert (await fail_login(client, "ivy@example.com")).status_code == 401
    refused = await client.post(
        "/users/login", json={"email": "ivy@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "too_many_attempts"
    assert 850 <= int(refused.headers["Retry-After"]) <= 900
    # Another account from the same address is not locked out by Ivy's.
    await register(client, "jay@example.com")
    await login(client, "jay@example.com")


async def test_an_unknown_account_is_throttled_like_a_real_one(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await fail_login(client, "nobody@example.com")).status_code == 401
    assert (await fail_login(client, "nobody@example.com")).status_code == 429


async def test_a_successful_login_clears_the_accounts_failures(client: httpx.AsyncClient) -> None:
    await register(client, "kai@example.com")
    for _ in range(4):
        await fail_login(client, "kai@example.com")
    await login(client, "kai@example.com")
    for _ in range(5):
        assert (await fail_login(client, "kai@example.com")).status_code == 401


async def test_failures_older_than_the_window_no_longer_count(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    await register(client, "lou@example.com")
    for _ in range(5):
        await fail_login(client, "lou@example.com")
    assert (await fail_login(client, "lou@example.com")).status_code == 429
    with psycopg.connect(shop_url, autocommit=True) as conn:
        conn.execute("UPDATE users.login_attempt SET at = at - interval '15 minutes 1 second'")
    await login(client, "lou@example.com")


async def test_one_address_is_throttled_across_accounts_and_others_are_not(
    settings_for: Callable[[str], ServiceSettings],
) -> None:
    app = create_app(settings_for("users"))
    async with serve_app(app) as first:
        await register(first, "mo@example.com")
        for i in range(20):
            assert (await fail_login(first, f"guess-{i}@example.com")).status_code == 401
        refused = await first.post(
            "/users/login", json={"email": "mo@example.com", "password": PASSWORD}
        )
        assert refused.status_code == 429 and "address" in refused.json()["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        # The same account from another address logs in.
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as other:
            await login(other, "mo@example.com")


async def test_failures_count_across_users_processes_and_parallel_guesses(
    settings_for: Callable[[str], ServiceSettings],
) -> None:
    async with (
        serve_app(create_app(settings_for("users"))) as one,
        serve_app(create_app(settings_for("users"))) as two,
    ):
        await register(one, "nia@example.com")
        answers = await asyncio.gather(*(fail_login(c, "nia@example.com") for c in [one, two] * 8))
        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {401, 429}, statuses
        # Then one at a time, alternating processes, until refused: of all these guesses
        # at most five were checked (a refused one does not count as a failure).
        for i in range(6):
            answer = await fail_login([one, two][i % 2], "nia@example.com")
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
        assert statuses[-1] == 429 and statuses.count(401) == 5, statuses


async def test_token_responses_are_not_to_be_stored(client: httpx.AsyncClient) -> None:
    body = {"email": "oz@example.com", "password": PASSWORD}
    registered = await client.post("/users/register", json=body)
    assert registered.headers["Cache-Control"] == "no-store"
    logged_in = await client.post("/users/login", json=body)
    assert logged_in.status_code == 200 and logged_in.headers["Cache-Control"] == "no-store"
    me = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {logged_in.json()['token']}"}
    )
    assert me.headers["Cache-Control"] == "no-store"
