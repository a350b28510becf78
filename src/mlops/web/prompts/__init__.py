"""The prompts section: a card grid of templates (version, status, calls), a read-only view
with Pygments-highlighted Jinja source, an editor (textarea, prompt.yaml, one input per
declared variable, a Preview button and a live preview fragment), git-style history with
highlighted diffs, publish and rollback, and usage charts.

One module per page group: `index` (the grid), `editor` (new and edit, with `preview`, the
draft rendered in the sandbox), `detail` (a version, publish and rollback, usage charts),
`history` (versions and diffs); `common` holds what they share.

Pages call the prompt store the API uses (`mlops.prompts.store.open_store`, `publishing`,
`analytics`, `rendering`): an edit is `PromptStore.update` with the base version the editor
was opened on (a stale base is refused, as in the API), the author of a commit is the form's
author or the caller (`console`), and the committer is always the caller. A preview renders
the unsaved draft in the same sandbox the store renders in and records no usage event."""

from __future__ import annotations

from mlops.web.prompts import detail, editor, history, index

ROUTERS = (index.router, editor.router, detail.router, history.router)
"""The page groups' routers, in the order they are mounted: the editor's `/prompts/_new`
before the detail's `/prompts/{name}`, which would match it too."""
