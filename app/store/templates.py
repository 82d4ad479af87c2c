"""Prompt template versions: version 1 is the shipped file, saved edits are 2, 3, …; one is each template's default."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from sqlmodel import Session, col, func, select

from .database import Database, retry_when_locked
from .models import PromptTemplate, TemplateDefault, now, plain


class TemplateStore(Database):
    """The prompt_template table."""

    @retry_when_locked
    def save_template(self, name: str, body: str, note: str = "", stamp: Callable[[str, int], str] | None = None) -> int:
        """Store an edited template as its next version (2 and up: version 1 is the shipped file).

        `stamp(body, version)` writes the version number into the body once it is known."""
        with self._write() as session:
            latest = session.exec(select(func.max(PromptTemplate.version)).where(PromptTemplate.name == name)).one()
            version = max(latest or 0, 1) + 1
            body = stamp(body, version) if stamp else body
            session.add(PromptTemplate(name=name, version=version, body=body, created_at=now(), note=note))
        return version

    @retry_when_locked
    def promote_template(self, name: str, version: int) -> None:
        """Make NAME@VERSION the version that runs when none is named; KeyError if it is not stored."""
        with self._write() as session:
            if not _stored(session, name, version):
                raise KeyError(f"no template {name!r} version {version}")
            session.merge(TemplateDefault(name=name, version=version, promoted_at=now()))

    def default_template_version(self, name: str) -> int | None:
        """The promoted version of a template, or None when none was promoted (then version 1 runs)."""
        with self._read() as session:
            row = session.get(TemplateDefault, name)
            return row.version if row else None

    def ensure_shipped_templates(self, bodies: Mapping[str, str]) -> int:
        """Store each shipped template as version 1 unless already there; return how many were added.

        Reads first, so the write transaction is opened only while a name is missing (once per database).
        """
        with self._read() as session:
            if not _missing(session, bodies):
                return 0
        return self._add_shipped(bodies)

    @retry_when_locked
    def _add_shipped(self, bodies: Mapping[str, str]) -> int:
        with self._write() as session:  # checked again here: another process may have added them meanwhile
            missing = _missing(session, bodies)
            session.add_all(PromptTemplate(name=name, version=1, body=bodies[name], created_at=now(), note="shipped")
                            for name in missing)
        return len(missing)

    def template_versions(self, name: str) -> list[dict]:
        """Every stored version of a template (version, created_at, note, body), oldest first."""
        query = select(PromptTemplate).where(PromptTemplate.name == name).order_by(col(PromptTemplate.version))
        with self._read() as session:
            return [plain(row) for row in session.exec(query).all()]

    def get_template(self, name: str, version: int) -> str:
        """The YAML text of one template version; KeyError if it is not stored."""
        query = select(PromptTemplate.body).where(PromptTemplate.name == name, PromptTemplate.version == version)
        with self._read() as session:
            body = session.exec(query).first()
        if body is None:
            raise KeyError(f"no template {name!r} version {version}")
        return body

    def latest_template_version(self, name: str) -> int | None:
        """The highest stored version of a template, or None if it has none."""
        with self._read() as session:
            return session.exec(select(func.max(PromptTemplate.version)).where(PromptTemplate.name == name)).one()


def _stored(session: Session, name: str, version: int) -> bool:
    query = select(PromptTemplate.id).where(PromptTemplate.name == name, PromptTemplate.version == version)
    return session.exec(query).first() is not None


def _missing(session: Session, names: Iterable[str]) -> list[str]:
    """The names that have no version 1 yet."""
    present = set(session.exec(select(PromptTemplate.name).where(PromptTemplate.version == 1)).all())
    return [name for name in names if name not in present]
