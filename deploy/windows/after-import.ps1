<#
.SYNOPSIS
  kvsync [[store]] hook: runs once when a new version of a certificate was
  added to the store (see iis-store.toml and IIS.md).

.DESCRIPTION
  kvsync has already imported the certificate into the store, granted the
  configured accounts read access to its key, linked the previous version to
  it and (rebind = true) moved every existing http.sys binding to it. This
  hook only covers what kvsync does not do: giving a site that has no HTTPS
  binding yet its first one. KVSYNC_CHANGED holds the new thumbprint.

  Exit code non-zero = the hook failed: kvsync logs it and runs it again
  next round.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string] $SiteName,
    [int] $Port = 443,
    [string] $HostHeader = "",
    [string] $StoreName = "My"
)

$ErrorActionPreference = "Stop"

$thumbprint = $env:KVSYNC_CHANGED
if ([string]::IsNullOrWhiteSpace($thumbprint)) {
    Write-Error "KVSYNC_CHANGED is empty: run this script as a kvsync [[store]] on_change hook"
    exit 1
}
$thumbprint = $thumbprint.Trim()

$cert = Get-Item -Path "Cert:\LocalMachine\$StoreName\$thumbprint" -ErrorAction SilentlyContinue
if ($null -eq $cert) {
    Write-Error "certificate $thumbprint is not in LocalMachine\$StoreName"
    exit 1
}
Write-Output "kvsync added $thumbprint ($($cert.Subject), expires $($cert.NotAfter.ToString('u')))"

Import-Module WebAdministration
$binding = Get-WebBinding -Name $SiteName -Protocol https -Port $Port -HostHeader $HostHeader
if ($null -eq $binding) {
    $sni = -not [string]::IsNullOrEmpty($HostHeader)
    $flags = 0
    if ($sni) { $flags = 1 }
    New-WebBinding -Name $SiteName -Protocol https -Port $Port -HostHeader $HostHeader -SslFlags $flags
    $binding = Get-WebBinding -Name $SiteName -Protocol https -Port $Port -HostHeader $HostHeader
    $binding.AddSslCertificate($thumbprint, $StoreName)
    Write-Output "created the https binding of '$SiteName' on port $Port with $thumbprint"
} else {
    # Existing bindings were moved by kvsync (rebind = true); nothing to do.
    Write-Output "'$SiteName' already has an https binding on port $Port"
}
exit 0
