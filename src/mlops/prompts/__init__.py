"""Prompt governance: git-backed templates, sandboxed rendering, publishing, usage."""
