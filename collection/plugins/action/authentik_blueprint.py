# Runs the authentik_blueprint binary module built for the architecture of the host it runs on.
from __future__ import annotations

from ansible_collections.affine_authentik.sso.plugins.plugin_utils.binary_module import BinaryModuleAction


class ActionModule(BinaryModuleAction):
    MODULE = 'authentik_blueprint'
    # affine_oidc's credentials: group defaults for them are not given to this module.
    OTHER_MODULES_CREDENTIALS = frozenset(['admin_email', 'admin_password', 'session_token'])
