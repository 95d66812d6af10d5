# Runs the affine_oidc binary module built for the architecture of the host it runs on.
from __future__ import annotations

from ansible_collections.affine_authentik.sso.plugins.plugin_utils.binary_module import BinaryModuleAction


class ActionModule(BinaryModuleAction):
    MODULE = 'affine_oidc'
    # authentik_blueprint's credential: a group default for it is not given to this module.
    OTHER_MODULES_CREDENTIALS = frozenset(['authentik_token'])
