"""The shared user accounts domain (paysys.users.accounts) against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select, update

from paysys.auth.models import AuthSession
from paysys.core.errors import AppError
from paysys.core.events.models import OutboxEvent
from paysys.core.passwords import verify_password
from paysys.core.revocation import REVOKED_SID_KEY, TOKEN_VERSION_KEY
from paysys.users import accounts
from paysys.users.models import User
from tests.support.auth import PASSWORD, runtime, unique_email

pytestmark = pytest.mark.usefixtures("clean_state")


async def _create(session, role: str = "CUSTOMER", email: str | None = None) -> User:  # type: ignore[no-untyped-def]
    return await accounts.create_user(
        session, email=email or unique_email(), password=PASSWORD, name="N", role=role, via="admin"
    )


async def _events(session, type_: str) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = await session.execute(select(OutboxEvent.payload).where(OutboxEvent.type == type_))
    return [r[0] for r in rows]


async def test_create_user_hashes_emits_and_rejects_duplicates() -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        user = await accounts.create_user(
            session,
            email="  Mixed.Case@Example.COM ",
            password=PASSWORD,
            name=" Ann ",
            role="VENDOR",
            via="register",
        )
        await session.commit()
        assert user.email == "mixed.case@example.com" and user.name == "Ann"
        assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert (await verify_password(user.password_hash, PASSWORD)) == (True, False)
        data = accounts.user_json(user)
        assert set(data) == {
            "id",
            "email",
            "name",
            "role",
            "isActive",
            "emailVerified",
            "createdAt",
            "updatedAt",
        }
        assert data["createdAt"].endswith("Z")
        (event,) = await _events(session, "user.created")
        assert event["data"] == {"user": data, "via": "register"}
        assert "passwordHash" not in str(event) and "argon2" not in str(event)
        with pytest.raises(AppError) as exc:
            await _create(session, email="MIXED.case@example.com")
        assert exc.value.code == "EMAIL_EXISTS" and exc.value.status == 409


async def test_create_user_policy_reports_every_rule() -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        with pytest.raises(AppError) as exc:
            await accounts.create_user(
                session,
                email=unique_email(),
                password="short",
                name="N",
                role="CUSTOMER",
                via="admin",
            )
        assert exc.value.code == "VALIDATION_ERROR"
        messages = [d["message"] for d in exc.value.details]
        assert messages == [
            "must be at least 12 characters",
            "must contain at least one upper-case letter",
            "must contain at least one digit",
            "must contain at least one character that is not a letter or digit",
        ]
        assert all(d["field"] == "password" for d in exc.value.details)
        with pytest.raises(AppError) as bad_role:
            await accounts.create_user(
                session,
                email=unique_email(),
                password=PASSWORD,
                name="N",
                role="ROOT",
                via="admin",
            )
        assert bad_role.value.code == "VALIDATION_ERROR"


async def test_concurrent_creates_of_one_email_make_one_user() -> None:
    email = unique_email()
    async with runtime() as rt:

        async def attempt() -> str:
            async with rt.sessionmaker() as session:
                try:
                    await _create(session, email=email)
                    await session.commit()
                    return "ok"
                except AppError as exc:
                    return exc.code

        results = await asyncio.gather(*(attempt() for _ in range(5)))
        assert sorted(results) == ["EMAIL_EXISTS"] * 4 + ["ok"]


async def test_change_role_guards_revocation_and_event() -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        admin_id = (await _create(session, "ADMIN")).id
        customer_id = (await _create(session)).id
        await session.commit()
        with pytest.raises(AppError) as exc:
            await accounts.change_role(session, rt.redis, admin_id, "CUSTOMER", actor_id=admin_id)
        assert exc.value.code == "CANNOT_MODIFY_SELF"
        await session.rollback()
        with pytest.raises(AppError) as last:
            await accounts.change_role(
                session, rt.redis, admin_id, "CUSTOMER", actor_id=customer_id
            )
        assert last.value.code == "LAST_ADMIN"
        await session.rollback()
        same = await accounts.change_role(session, rt.redis, admin_id, "ADMIN", actor_id=admin_id)
        assert same.role == "ADMIN"
        with pytest.raises(AppError) as promote_self:
            await accounts.change_role(
                session, rt.redis, customer_id, "ADMIN", actor_id=customer_id
            )
        assert promote_self.value.code == "CANNOT_MODIFY_SELF"
        await session.rollback()
        updated = await accounts.change_role(
            session, rt.redis, customer_id, "VENDOR", actor_id=admin_id
        )
        # Published after the commit only: a rolled-back bump must never reach Redis.
        assert await rt.redis.get(TOKEN_VERSION_KEY.format(customer_id)) is None
        await session.commit()
        await accounts.publish_revocations(session)
        assert updated.role == "VENDOR" and updated.token_version == 1
        mark = await rt.redis.get(TOKEN_VERSION_KEY.format(customer_id))
        assert int(str(mark)) == updated.token_version
        (event,) = await _events(session, "user.role_changed")
        assert event["data"] == {
            "userId": str(customer_id),
            "oldRole": "CUSTOMER",
            "newRole": "VENDOR",
        }
        assert event["actorId"] == str(admin_id)


async def test_two_admins_demoting_each_other_leaves_one() -> None:
    async with runtime() as rt:

        async def demote(target: uuid.UUID, actor: uuid.UUID) -> str:
            async with rt.sessionmaker() as session:
                try:
                    await accounts.change_role(
                        session, rt.redis, target, "CUSTOMER", actor_id=actor
                    )
                    await session.commit()
                    return "ok"
                except AppError as exc:
                    return exc.code

        async def deactivate(target: uuid.UUID, actor: uuid.UUID) -> str:
            async with rt.sessionmaker() as session:
                try:
                    await accounts.set_active(session, rt.redis, target, False, actor_id=actor)
                    await session.commit()
                    return "ok"
                except AppError as exc:
                    return exc.code

        for round_ in range(4):  # several rounds: a lock-order deadlock would show up here
            async with rt.sessionmaker() as session:
                await session.execute(update(User).values(role="CUSTOMER"))
                a = await _create(session, "ADMIN")
                b = await _create(session, "ADMIN")
                await session.commit()
            second = deactivate if round_ % 2 else demote
            results = await asyncio.gather(demote(a.id, b.id), second(b.id, a.id))
            assert sorted(results) == ["LAST_ADMIN", "ok"], results
            async with rt.sessionmaker() as session:
                admins = await session.scalar(
                    select(func.count())
                    .select_from(User)
                    .where(User.role == "ADMIN", User.is_active.is_(True))
                )
                assert admins == 1


async def test_deactivate_ends_sessions_and_delete_frees_email() -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        admin = await _create(session, "ADMIN")
        email = unique_email()
        user = await _create(session, email=email)
        sid = uuid.uuid4()
        session.add(
            AuthSession(
                id=sid,
                user_id=user.id,
                refresh_hash="x",
                rotated_at_ms=1,
                expires_at=func.now(),
            )
        )
        await session.commit()
        same = await accounts.set_active(session, rt.redis, user.id, True, actor_id=admin.id)
        assert same.is_active
        off = await accounts.set_active(
            session, rt.redis, user.id, False, actor_id=admin.id, reason="  fraud "
        )
        await session.commit()
        await accounts.publish_revocations(session)
        assert not off.is_active
        revoked = await session.scalar(select(AuthSession.revoked).where(AuthSession.id == sid))
        assert revoked is True
        assert await rt.redis.get(REVOKED_SID_KEY.format(sid)) == "1"
        (event,) = await _events(session, "user.status_changed")
        assert event["data"] == {"userId": str(user.id), "isActive": False, "reason": "fraud"}
        on = await accounts.set_active(session, rt.redis, user.id, True, actor_id=admin.id)
        await session.commit()
        assert on.is_active

        user_id = user.id
        await accounts.delete_user(session, rt.redis, user_id, actor_id=admin.id)
        await session.commit()
        with pytest.raises(AppError) as gone:
            await accounts.get_user(session, user_id)
        assert gone.value.code == "USER_NOT_FOUND"
        again = await _create(session, email=email)  # the email is free again
        await session.commit()
        assert again.id != user_id
        admin_id = admin.id
        with pytest.raises(AppError) as self_delete:
            await accounts.delete_user(session, rt.redis, admin_id, actor_id=admin_id)
        assert self_delete.value.code == "CANNOT_MODIFY_SELF"
        await session.rollback()
        (deleted,) = await _events(session, "user.deleted")
        assert deleted["data"] == {"userId": str(user_id)}


async def test_update_user_changes_and_duplicate() -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        taken = unique_email()
        await _create(session, email=taken)
        user = await _create(session)
        old_email, user_id = user.email, user.id
        await session.commit()
        unchanged = await accounts.update_user(session, rt.redis, user_id, actor_id=None, name="N")
        assert unchanged.name == "N"
        with pytest.raises(AppError) as dup:
            await accounts.update_user(
                session, rt.redis, user_id, actor_id=None, email=taken.upper()
            )
        assert dup.value.code == "EMAIL_EXISTS"
        await session.rollback()
        new_email = unique_email()
        updated = await accounts.update_user(
            session, rt.redis, user_id, actor_id=None, name="New", email=new_email.upper()
        )
        await session.commit()
        assert updated.email == new_email and updated.name == "New"
        (event,) = await _events(session, "user.updated")
        assert event["data"]["changes"] == {
            "name": {"old": "N", "new": "New"},
            "email": {"old": old_email, "new": new_email},
        }
        with pytest.raises(AppError) as missing:
            await accounts.update_user(session, rt.redis, uuid.uuid4(), actor_id=None, name="x")
        assert missing.value.code == "USER_NOT_FOUND"


async def test_revocation_with_redis_down_still_revokes_in_db(redis_server) -> None:  # type: ignore[no-untyped-def]
    async with runtime() as rt, rt.sessionmaker() as session:
        admin = await _create(session, "ADMIN")
        user = await _create(session)
        await session.commit()
        redis_server.stop()
        try:
            changed = await accounts.change_role(
                session, rt.redis, user.id, "VENDOR", actor_id=admin.id
            )
            await session.commit()
            await accounts.publish_revocations(session)  # logged, never raised
        finally:
            redis_server.start()
        assert changed.token_version == 1
        stored = await session.scalar(select(User.token_version).where(User.id == user.id))
        assert stored == changed.token_version
