"""The Python SDK contender: what a user would write without kvsync.

azure-identity's ManagedIdentityCredential (Azure Arc flow: IDENTITY_ENDPOINT
and IMDS_ENDPOINT set, challenge file under /var/opt/azcmagent/tokens) and
azure-keyvault-secrets' SecretClient, one GET per secret, one file each.

usage: sdk.py VAULT_URL OUT_DIR NAME...
"""

import os
import sys

from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient


def main() -> None:
    vault, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    # The emulator answers on https://localhost:PORT while its challenge names
    # https://vault.azure.net: skip the SDK's resource/host check.
    client = SecretClient(
        vault_url=vault,
        credential=ManagedIdentityCredential(),
        verify_challenge_resource=False,
    )
    os.makedirs(out, exist_ok=True)
    for name in names:
        value = client.get_secret(name).value
        fd = os.open(os.path.join(out, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)


if __name__ == "__main__":
    main()
