# The action plugin behind both modules of affine_authentik.sso.
#
# Ansible copies ONE module file to the host a task runs on (the target, or the controller
# under delegate_to: localhost / connection: local), so a module name alone cannot pick an
# x86_64 or an aarch64 build. This plugin runs on the controller first, asks the host the
# task will run on for `uname -sm` through the task's own connection (the delegated one when
# delegated; a shell command, so the host needs no Python), and then runs the binary built for
# that architecture, plugins/modules/__bin__/<arch>/affine_authentik, as a binary module with the
# task's arguments. Everything else (args file, check mode, diff, become, temp dirs) is
# Ansible's own _execute_module.
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

COLLECTION = 'affine_authentik.sso'
GROUP = 'group/%s.all' % COLLECTION
BINARY = '%s.__bin__.{arch}.affine_authentik' % COLLECTION
# `uname -m` words for the architectures binaries are built for.
ARCHITECTURES = {
    'x86_64': 'x86_64',
    'amd64': 'x86_64',
    'aarch64': 'aarch64',
    'arm64': 'aarch64',
}
# The args-file key by which the binary learns which module it is (src/ansible/protocol.rs).
MODULE_KEY = '_affine_authentik_module'


class BinaryModuleAction(ActionBase):
    MODULE = ''
    OTHER_MODULES_CREDENTIALS = frozenset()

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        try:
            module = BINARY.format(arch=self._architecture())
            if not self._shared_loader_obj.module_loader.has_plugin(module):
                shipped = sorted(set(ARCHITECTURES.values()))
                raise AnsibleActionFail(
                    'this %s collection holds no binary for %s (looked for %s; built for: %s)'
                    % (COLLECTION, module.split('.')[-2], module, ', '.join(shipped)))
            args = self._module_args()
            result.update(self._execute_module(module_name=module, module_args=args, task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _architecture(self):
        out = self._low_level_execute_command('uname -sm', sudoable=False)
        words = out.get('stdout', '').split()
        if out.get('rc') != 0 or len(words) != 2:
            raise AnsibleActionFail(
                'cannot tell the architecture of the host this task runs on: `uname -sm` gave rc=%s, %r %r'
                % (out.get('rc'), out.get('stdout', ''), out.get('stderr', '')))
        system, machine = words
        if system != 'Linux' or machine not in ARCHITECTURES:
            raise AnsibleActionFail(
                '%s runs on Linux x86_64 and aarch64; the host this task runs on is %s %s'
                % (self._task.action, system, machine))
        return ARCHITECTURES[machine]

    def _module_args(self):
        # The task's arguments, module_defaults already merged in by Ansible. A credential
        # that only the other module takes may have come from the shared group: leave it out
        # here, as the binary (like AnsibleModule) refuses a parameter it does not know.
        args = dict(self._task.args)
        group = {}
        for defaults in self._task.module_defaults or []:
            group.update(defaults.get(GROUP) or {})
        for key in self.OTHER_MODULES_CREDENTIALS & set(group):
            args.pop(key, None)
        args[MODULE_KEY] = self.MODULE
        return args
