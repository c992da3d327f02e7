"""`paysys db seed`, profile part: the §8 users' profiles, idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from paysys.core.events.models import OutboxEvent
from paysys.profile import seed
from paysys.profile.models import Profile
from paysys.users.models import User
from tests.support.auth import runtime

pytestmark = pytest.mark.usefixtures("clean_state")


async def _snapshot(session) -> dict:  # type: ignore[no-untyped-def, type-arg]
    rows = await session.execute(select(Profile).order_by(Profile.user_id))
    return {
        p.user_id: (p.phone_number, p.address, p.avatar_url, p.bio, p.preferences, p.updated_at)
        for p in rows.scalars()
    }


async def _events(session) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    rows = await session.execute(
        select(OutboxEvent.payload).where(OutboxEvent.type == "profile.updated")
    )
    return [row[0] for row in rows]


async def test_seed_profiles_idempotent() -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        ids = {}
        for email in seed.SEED_PROFILES:
            user_id = await session.scalar(
                insert(User)
                .values(email=email.upper(), name=email, role="CUSTOMER", password_hash="x")
                .returning(User.id)
            )
            ids[email] = user_id
        await session.commit()
        await seed.seed(session)
        await session.commit()
        first = await _snapshot(session)
        assert len(first) == 3
        vendor = first[ids["vendor@example.com"]]
        assert vendor[0] == "+4930901820" and vendor[4]["currency"] == "EUR"
        events = await _events(session)
        assert len(events) == 3
        vendor_event = next(e for e in events if e["actorId"] == str(ids["vendor@example.com"]))
        assert vendor_event["source"] == "profile-service"
        assert vendor_event["data"]["changes"]["phoneNumber"] == {"cleared": False}
        assert vendor_event["data"]["changes"]["preferences.currency"] == {
            "old": "USD",
            "new": "EUR",
        }
        await seed.seed(session)
        await session.commit()
        assert await _snapshot(session) == first
        assert len(await _events(session)) == 3  # second run: nothing changed, nothing emitted


async def test_seed_without_users_does_nothing_and_keeps_erased_profiles() -> None:
    async with runtime() as rt, rt.sessionmaker() as session:
        await seed.seed(session)
        await session.commit()
        assert await _snapshot(session) == {}
        user_id = await session.scalar(
            insert(User)
            .values(email="admin@example.com", name="A", role="ADMIN", password_hash="x")
            .returning(User.id)
        )
        from sqlalchemy import func

        await session.execute(
            insert(Profile).values(user_id=user_id, personal_data_removed_at=func.now())
        )
        await session.commit()
        await seed.seed(session)
        await session.commit()
        (row,) = (await _snapshot(session)).values()
        assert row[:5] == (None, None, None, None, {})
