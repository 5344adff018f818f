"""Tokens only the users service can mint, and revocations every service applies.

Services run in-process (apps through ASGI, workers as tasks), each as its own
database role, against a real Postgres; user.changed travels on the real bus.
"""

from __future__ import annotations

import contextlib
import hashlib
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest

from pgcourier import Admin, ConfigurationError, Courier
from runner import kept_keys
from services.orders.app import create_app as orders_app
from services.orders.handlers import setup as orders_setup
from services.payments.app import create_app as payments_app
from services.products.app import create_app as products_app
from services.products.handlers import setup as products_setup
from services.shared.auth import (
    Principal,
    SigningKey,
    key_id,
    public_key_text,
    public_keys_parse,
    token_issue,
)
from services.shared.database import role_url
from services.shared.settings import ServiceSettings
from services.users.app import create_app as users_app
from tests.helpers import wait_until
from tests.shop.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ROLE_PASSWORDS,
    TEST_SIGNING_KEY,
    run_service_worker,
    serve_app,
    token_for,
)

PASSWORD = "correct horse battery"
PEN = "0b5f0b6e-7c44-4b8f-9a55-2f5d7d1e0a01"
# Demotion, deletion and logout everywhere must reach every service within this.
WITHIN_S = 5.0

Settings = Callable[[str], ServiceSettings]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(users: httpx.AsyncClient, email: str) -> str:
    r = await users.post("/users/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return r.json()["user_id"]


async def login(users: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    r = await users.post("/users/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


async def refused_within(call: Callable[[], object], status: int = 401) -> float:
    """Seconds until call() answers status (AssertionError after WITHIN_S)."""

    async def refused() -> bool:
        return (await call()).status_code == status  # type: ignore[misc]

    return await wait_until(refused, within=WITHIN_S, interval=0.05)


# -- who can sign ------------------------------------------------------------------


def forged_tokens(user_id: str) -> dict[str, str]:
    """Admin tokens for user_id that anyone but the users service could make."""
    now = int(time.time())
    claims = {"sub": user_id, "role": "admin", "ver": 1, "iat": now, "exp": now + 600}
    other = SigningKey.generate()
    return {
        "hs256 with a shared secret": jwt.encode(claims, "s" * 32, algorithm="HS256"),
        # The verifier's own public key as an HMAC secret: the classic key confusion.
        "hs256 keyed with the public key": jwt.encode(
            claims,
            public_key_text(TEST_SIGNING_KEY.public_key),
            algorithm="HS256",
            headers={"kid": TEST_SIGNING_KEY.kid},
        ),
        "another ed25519 key": token_issue(Principal(user_id, "admin"), key=other, ttl_s=600),
        "another key claiming the real kid": jwt.encode(
            claims, other.private_key, algorithm="EdDSA", headers={"kid": TEST_SIGNING_KEY.kid}
        ),
        "alg none": jwt.encode(
            claims, None, algorithm="none", headers={"kid": TEST_SIGNING_KEY.kid}
        ),
        "no kid": jwt.encode(claims, TEST_SIGNING_KEY.private_key, algorithm="EdDSA"),
    }


async def test_a_token_signed_by_anyone_but_users_is_refused_by_every_service(
    settings_for: Settings,
) -> None:
    user_id = str(uuid.uuid4())
    apps = {
        "users": (users_app, "/users"),
        "products": (products_app, "/products"),
        "orders": (orders_app, "/orders"),
        "payments": (payments_app, "/payments/summary"),
    }
    for service, (create, admin_route) in apps.items():
        async with serve_app(create(settings_for(service))) as client:
            genuine = await client.get(admin_route, headers=token_for(user_id, "admin"))
            assert genuine.status_code == 200, (service, genuine.text)
            for how, token in forged_tokens(user_id).items():
                r = await client.get(admin_route, headers=bearer(token))
                assert r.status_code == 401, (service, how, r.text)


async def test_tokens_of_every_listed_key_are_accepted_and_an_unknown_kid_refused(
    settings_for: Settings,
) -> None:
    old, new, unknown = TEST_SIGNING_KEY, SigningKey.generate(), SigningKey.generate()
    # Mid-rotation: users signs with the new key, the old one's tokens still count.
    keys = {old.kid: old.public_key, new.kid: new.public_key}
    settings = replace(settings_for("products"), token_keys=keys)
    user_id = str(uuid.uuid4())
    async with serve_app(products_app(settings)) as client:
        for key, status in ((old, 200), (new, 200), (unknown, 401)):
            token = token_issue(Principal(user_id, "customer"), key=key, ttl_s=60)
            assert jwt.get_unverified_header(token)["kid"] == key.kid
            r = await client.get("/products", headers=bearer(token))
            assert r.status_code == status, (key.kid, r.text)
    # After the rotation the old key is dropped: its tokens go with it.
    settings = replace(settings, token_keys={new.kid: new.public_key})
    async with serve_app(products_app(settings)) as client:
        token = token_issue(Principal(user_id, "customer"), key=old, ttl_s=60)
        r = await client.get("/products", headers=bearer(token))
        assert r.status_code == 401
        assert "unknown key id" in r.json()["message"]


def test_only_users_may_hold_the_private_key_and_its_public_key_must_be_listed(
    tmp_path: Path,
) -> None:
    keys = kept_keys(tmp_path / "keys")
    base = {
        "DATABASE_URL": "postgresql://x@localhost/shop",
        "SHOP_TOKEN_PUBLIC_KEYS": keys.public_keys,
        "SHOP_SERVICE_SECRET_FILE": keys.service_secret_files["users"],
        "SHOP_TOKEN_PRIVATE_KEY_FILE": str(keys.signing_key_file),
    }
    users = ServiceSettings.from_env("users", base)
    assert users.signing_key is not None
    assert set(users.token_keys) == {users.signing_key.kid}
    with pytest.raises(ConfigurationError, match="only users signs tokens"):
        ServiceSettings.from_env("orders", base)
    others = {k: v for k, v in base.items() if k != "SHOP_TOKEN_PRIVATE_KEY_FILE"}
    assert ServiceSettings.from_env("orders", others).signing_key is None
    stranger = public_key_text(SigningKey.generate().public_key)
    with pytest.raises(ConfigurationError, match="lacks the signing key"):
        ServiceSettings.from_env("users", {**base, "SHOP_TOKEN_PUBLIC_KEYS": stranger})
    with pytest.raises(ConfigurationError, match="SHOP_TOKEN_PUBLIC_KEYS"):
        ServiceSettings.from_env("orders", {**others, "SHOP_TOKEN_PUBLIC_KEYS": ""})


def test_runner_keeps_the_keys_private_and_a_rotation_keeps_the_old_public_key(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "keys"
    first = kept_keys(directory)
    assert stat.S_IMODE(first.signing_key_file.stat().st_mode) == 0o600
    for path in first.service_secret_files.values():
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    secrets = {Path(p).read_text() for p in first.service_secret_files.values()}
    assert len(secrets) == 4  # one per service, none shared
    assert kept_keys(directory) == first  # kept, not regenerated
    old_kid = SigningKey.from_file(first.signing_key_file).kid

    first.signing_key_file.unlink()  # rotate: a new signing key on the next start
    second = kept_keys(directory)
    new_kid = SigningKey.from_file(second.signing_key_file).kid
    assert new_kid != old_kid
    assert set(public_keys_parse(second.public_keys)) == {old_kid, new_kid}


# -- revocation everywhere ----------------------------------------------------------


@contextlib.asynccontextmanager
async def admin_session(users: httpx.AsyncClient) -> AsyncIterator[dict[str, str]]:
    yield bearer((await login(users, ADMIN_EMAIL, ADMIN_PASSWORD))["token"])


async def test_a_demoted_admin_is_refused_by_products_admin_routes_within_seconds(
    settings_for: Settings,
) -> None:
    product = {"name": "Pen", "category": "office", "price_cents": 250}
    async with (
        serve_app(users_app(settings_for("users"))) as users,
        serve_app(products_app(settings_for("products"))) as products,
        run_service_worker(settings_for("products"), products_setup),
        admin_session(users) as admin,
    ):
        eve_id = await register(users, "eve@example.com")
        r = await users.put(f"/users/{eve_id}/role", json={"role": "admin"}, headers=admin)
        assert r.status_code == 200
        eve = await login(users, "eve@example.com")
        created = await products.post("/products", json=product, headers=bearer(eve["token"]))
        assert created.status_code == 201, created.text

        r = await users.put(f"/users/{eve_id}/role", json={"role": "customer"}, headers=admin)
        assert r.status_code == 200
        # Her token still has an admin role claim and minutes to live: refused anyway.
        await refused_within(
            lambda: products.post("/products", json=product, headers=bearer(eve["token"]))
        )
        # Nor can it promote itself back.
        again = await users.put(
            f"/users/{eve_id}/role", json={"role": "admin"}, headers=bearer(eve["token"])
        )
        assert again.status_code == 401
        # A refresh gets a token with her new role: a customer's.
        renewed = await users.post("/users/refresh", json={"refresh_token": eve["refresh_token"]})
        assert renewed.status_code == 200, renewed.text
        claims = jwt.decode(renewed.json()["token"], options={"verify_signature": False})
        assert claims["role"] == "customer"
        r = await products.post("/products", json=product, headers=bearer(renewed.json()["token"]))
        assert r.status_code == 403
        listed = await products.get("/products", headers=bearer(renewed.json()["token"]))
        assert listed.status_code == 200


async def test_a_deleted_users_token_cannot_place_an_order_within_seconds(
    settings_for: Settings, shop_url: str
) -> None:
    order = {"lines": [{"product_id": PEN, "quantity": 1}], "card_token": "tok_visa"}
    async with (
        Courier(role_url(shop_url, "products", ROLE_PASSWORDS["products"]), pool_max_size=2) as bus,
        serve_app(users_app(settings_for("users"))) as users,
        serve_app(orders_app(settings_for("orders"))) as orders,
        run_service_worker(settings_for("orders"), orders_setup),
        admin_session(users) as admin,
    ):
        product = {"product_id": PEN, "name": "Pen", "price_cents": 250, "active": True}
        await bus.publish("product.created", product, ordering_key=PEN)
        async with await psycopg.AsyncConnection.connect(shop_url) as conn:

            async def copied() -> bool:
                cur = await conn.execute("SELECT count(*) FROM orders.product")
                return (await cur.fetchone())[0] == 1  # type: ignore[index]

            await wait_until(copied, within=WITHIN_S, interval=0.05)

        zoe_id = await register(users, "zoe@example.com")
        zoe = await login(users, "zoe@example.com")
        placed = await orders.post("/orders", json=order, headers=bearer(zoe["token"]))
        assert placed.status_code == 202, placed.text

        gone = await users.delete(f"/users/{zoe_id}", headers=admin)
        assert gone.status_code == 204
        assert (await users.delete(f"/users/{zoe_id}", headers=admin)).status_code == 404
        took = await refused_within(
            lambda: orders.post("/orders", json=order, headers=bearer(zoe["token"]))
        )
        assert took < WITHIN_S
        assert (await users.get("/users/me", headers=bearer(zoe["token"]))).status_code == 401
        # No new token either: the account's refresh tokens went with it.
        r = await users.post("/users/refresh", json={"refresh_token": zoe["refresh_token"]})
        assert r.status_code == 401


async def test_a_customer_cannot_delete_accounts_and_the_last_admin_cannot_be_deleted(
    settings_for: Settings,
) -> None:
    async with (
        serve_app(users_app(settings_for("users"))) as users,
        admin_session(users) as admin,
    ):
        ann_id = await register(users, "ann@example.com")
        ann = bearer((await login(users, "ann@example.com"))["token"])
        assert (await users.delete(f"/users/{ann_id}", headers=ann)).status_code == 403
        admin_id = (await users.get("/users/me", headers=admin)).json()["user_id"]
        last = await users.delete(f"/users/{admin_id}", headers=admin)
        assert last.status_code == 409
        assert (await users.get("/users", headers=admin)).status_code == 200


async def test_logout_everywhere_refuses_the_users_access_tokens_on_other_services(
    settings_for: Settings,
) -> None:
    async with (
        serve_app(users_app(settings_for("users"))) as users,
        serve_app(orders_app(settings_for("orders"))) as orders,
        run_service_worker(settings_for("orders"), orders_setup),
    ):
        await register(users, "max@example.com")
        laptop = await login(users, "max@example.com")
        phone = await login(users, "max@example.com")
        assert (await orders.get("/orders", headers=bearer(phone["token"]))).status_code == 200

        out = await users.post(
            "/users/logout", json={"refresh_token": laptop["refresh_token"], "everywhere": True}
        )
        assert out.status_code == 204
        await refused_within(lambda: orders.get("/orders", headers=bearer(phone["token"])))
        assert (await users.get("/users/me", headers=bearer(laptop["token"]))).status_code == 401
        for session in (laptop, phone):
            r = await users.post("/users/refresh", json={"refresh_token": session["refresh_token"]})
            assert r.status_code == 401
        # Signing in again works, and the new token is accepted everywhere.
        fresh = await login(users, "max@example.com")
        assert (await orders.get("/orders", headers=bearer(fresh["token"]))).status_code == 200


# -- refresh tokens -----------------------------------------------------------------


async def test_refresh_rotates_the_token_and_a_reused_one_ends_the_session(
    settings_for: Settings, shop_url: str
) -> None:
    async with serve_app(users_app(settings_for("users"))) as users:
        user_id = await register(users, "ron@example.com")
        first = await login(users, "ron@example.com")
        assert first["refresh_expires_in"] > first["expires_in"]

        r = await users.post("/users/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        second = r.json()
        assert second["refresh_token"] != first["refresh_token"]
        me = await users.get("/users/me", headers=bearer(second["token"]))
        assert me.json()["user_id"] == user_id

        # Only hashes at rest.
        with psycopg.connect(shop_url) as conn:
            stored = {
                bytes(h)
                for (h,) in conn.execute("SELECT token_hash FROM users.refresh_token").fetchall()
            }
        assert hashlib.sha256(second["refresh_token"].encode()).digest() in stored
        assert not any(second["refresh_token"].encode() in h for h in stored)

        # The first token again: someone kept a copy. Its chain ends, the live one too.
        reused = await users.post("/users/refresh", json={"refresh_token": first["refresh_token"]})
        assert reused.status_code == 401
        after = await users.post("/users/refresh", json={"refresh_token": second["refresh_token"]})
        assert after.status_code == 401

        garbage = await users.post("/users/refresh", json={"refresh_token": "x" * 43})
        assert garbage.status_code == 401


async def test_logout_revokes_that_sessions_refresh_token_only(settings_for: Settings) -> None:
    async with serve_app(users_app(settings_for("users"))) as users:
        await register(users, "sue@example.com")
        laptop = await login(users, "sue@example.com")
        phone = await login(users, "sue@example.com")
        out = await users.post("/users/logout", json={"refresh_token": laptop["refresh_token"]})
        assert out.status_code == 204
        # Logging out twice is no error.
        again = await users.post("/users/logout", json={"refresh_token": laptop["refresh_token"]})
        assert again.status_code == 204
        r = await users.post("/users/refresh", json={"refresh_token": laptop["refresh_token"]})
        assert r.status_code == 401
        r = await users.post("/users/refresh", json={"refresh_token": phone["refresh_token"]})
        assert r.status_code == 200
        # Everywhere needs a live refresh token: a revoked one signs nobody out.
        r = await users.post(
            "/users/logout", json={"refresh_token": laptop["refresh_token"], "everywhere": True}
        )
        assert r.status_code == 401


async def test_a_late_user_changed_event_cannot_bring_a_revoked_token_back(
    settings_for: Settings, shop_url: str
) -> None:
    user_id = str(uuid.uuid4())
    async with (
        Courier(role_url(shop_url, "users", ROLE_PASSWORDS["users"]), pool_max_size=2) as bus,
        serve_app(products_app(settings_for("products"))) as products,
        run_service_worker(settings_for("products"), products_setup),
    ):
        events = [
            {"user_id": user_id, "token_version": 3, "deleted": False},
            {"user_id": user_id, "token_version": 2, "deleted": False},  # late, older
        ]
        for event in events:
            await bus.publish("user.changed", event, ordering_key=user_id)

        async def applied() -> bool:
            async with await psycopg.AsyncConnection.connect(shop_url) as conn:
                cur = await conn.execute("SELECT count(*) FROM pgmq.q_products_inbox")
                return (await cur.fetchone())[0] == 0  # type: ignore[index]

        await wait_until(applied, within=WITHIN_S, interval=0.05)
        for version, status in ((2, 401), (3, 200)):
            r = await products.get("/products", headers=token_for(user_id, version=version))
            assert r.status_code == status, version


async def test_a_user_changed_event_not_sent_by_users_is_dead_lettered_unapplied(
    settings_for: Settings, shop_url: str
) -> None:
    user_id = str(uuid.uuid4())
    async with (
        Courier(role_url(shop_url, "orders", ROLE_PASSWORDS["orders"]), pool_max_size=2) as forger,
        Courier(shop_url, pool_max_size=2) as admin,
        run_service_worker(settings_for("products"), products_setup),
    ):
        event = {"user_id": user_id, "token_version": 1, "deleted": True}
        await forger.publish("user.changed", event, ordering_key=user_id)

        async def dead() -> bool:
            letters = await Admin(admin).dead_letters("products_inbox")
            return any(d.payload == event for d in letters)

        await wait_until(dead, within=WITHIN_S, interval=0.05)
        async with await psycopg.AsyncConnection.connect(shop_url) as conn:
            cur = await conn.execute("SELECT count(*) FROM products.token_revocation")
            assert (await cur.fetchone())[0] == 0  # type: ignore[index]


def test_key_ids_name_the_key() -> None:
    other = SigningKey.generate()
    assert key_id(other.public_key) == other.kid != TEST_SIGNING_KEY.kid
    assert public_keys_parse(public_key_text(other.public_key)) == {other.kid: other.public_key}
    with pytest.raises(ValueError):
        public_keys_parse("not-a-key")
