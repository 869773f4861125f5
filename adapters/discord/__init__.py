"""The Discord adapter: slash commands, buttons and replies that parse, hand to the core, and render
(docs/rules.md §2, Discord). Everything that is not Discord-specific (parsing, quotas, the API call, the ledger)
is the core's.

- adapter.py: `DiscordAdapter`, what `imagebot run` starts, and what an interaction needs of it (answered once,
  a private word, the job's view); interactions.py: what reads only the interaction (who asked, the answer
  within 3 s, its language, links);
- client.py: the discord.py client and its command tree (gateway, shards, login, command sync, threads);
- commands.py: the members' slash commands (a cog) and the "Edit image" message command; admin.py:
  `/imagine-admin` (a Group); localizations.py: their names and descriptions in the reader's language;
- components.py: how messages look and the buttons and forms they carry; presses.py: what a press does;
- listeners.py: gateway events (a reply that edits an image, the Edit button's form);
- view.py: how a job is shown, progressed and delivered; images.py: downloads, and our images found again;
- text.py: Discord's message text (escaping, length, mentions) and its errors in words;
- parts.py: what the parts above ask of the adapter (`AdapterSide`, a protocol): the adapter builds its parts
  and hands itself in, and no part imports adapter.py.
"""

from .adapter import DiscordAdapter, sync_now
from .components import progress_text
from .images import is_image
from .localizations import CommandTranslator, command_key
from .text import MAX_CONTENT, escape, token_gone, too_large
from .view import fit_images

__all__ = [
    "MAX_CONTENT",
    "CommandTranslator",
    "DiscordAdapter",
    "command_key",
    "escape",
    "fit_images",
    "is_image",
    "progress_text",
    "sync_now",
    "token_gone",
    "too_large",
]
