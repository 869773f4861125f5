"""The Slack adapter: bolt listeners that read Slack's payloads, hand them to the core, and show its answers
(docs/rules.md §2, Slack). Everything that is not Slack-specific (parsing, quotas, the API call, the ledger)
is the core's.

- `adapter.py`: `SlackAdapter`, the bolt app and its lifecycle (HTTP mode or Socket Mode, the tasks after acks).
- `middleware.py`: what every listener would otherwise do itself (ack, who asks, a replay ignored), as bolt
  middleware; bolt's own drops the events the bot itself caused.
- `commands.py`, `actions.py`, `events.py` (on `listeners.py`): the listeners (slash commands; clicks and forms;
  messages and the Home tab), each with the work it hands to a task after the ack.
- `view.py`: how a job and a private answer are shown; `blocks.py`: the Block Kit they are built from.
- `client.py`: the Web API client and its retries; `people.py`: users and user groups; `files.py`: our images.
- `parts.py`: what the parts ask of the adapter (`SlackSide`, a protocol): the adapter builds its parts and
  hands itself in, and no part imports `adapter.py`.
"""

from .adapter import SlackAdapter

__all__ = ["SlackAdapter"]
