"""The catalog's own refusals, in the gateway's one ServiceError hierarchy
(service/platform/errors.py)."""

from __future__ import annotations

from service.platform.errors import InvalidRequest, NotFound, ServiceError


class ModelRetired(InvalidRequest):
    """A model id the vendor retired: 400, as Qingbo refuses it (refused, never billed), so
    an app that handles Qingbo's 400 handles this; the message and `retired_on` name the date."""

    code = "model_retired"


class AssetReferenceUnsupported(InvalidRequest):
    """`asset://` media: the vendor's asset library is shared by the whole company's key,
    so no team may name an asset until the gateway proxies the library per team."""

    code = "asset_reference_unsupported"


class ChainSourceNotFound(NotFound):
    """`ref_task_id` names no task of the caller's team (another team's is not found either)."""

    code = "task_not_found"


class ChainSourceNotCompleted(ServiceError):
    """`ref_task_id` names the team's task, but it has not completed (yet, or ever)."""

    status = 409
    code = "task_not_completed"
