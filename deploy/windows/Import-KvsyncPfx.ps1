#Requires -Version 5.1
#Requires -RunAsAdministrator
<#
.SYNOPSIS
    Imports the PFX that kvsync wrote into LocalMachine\My and points an IIS
    site's https binding at it, by thumbprint. Idempotent.

.DESCRIPTION
    Meant to run after `kvsync once` (scheduled task) or as a kvsync
    on_change hook. Steps:
      1. Read the leaf certificate's thumbprint from the PFX (Get-PfxData),
         without importing anything yet.
      2. If LocalMachine\My has no certificate with that thumbprint and a
         private key, import the PFX there (key not exportable).
      3. If the site's https binding (port, host header) already uses that
         thumbprint: done, nothing touched (exit 0).
         Otherwise bind the new certificate to it (creating the binding if
         missing).
      4. With -RemoveOld, delete the certificate that was bound before, if no
         other binding still uses it.
    Exit code 0 on success, 1 on any error (kvsync reports a failed hook).
    Writes no secret: only paths, subjects, thumbprints and dates.

.PARAMETER PfxPath
    The PFX written by kvsync (format = "pfx"); Key Vault PFX files have no
    password.

.PARAMETER SiteName
    IIS site name, e.g. "Default Web Site".

.EXAMPLE
    .\Import-KvsyncPfx.ps1 -PfxPath C:\ProgramData\kvsync\out\site.pfx -SiteName "Default Web Site" -HostHeader www.contoso.com -RemoveOld
#>
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [Parameter(Mandatory = $true)][string]$PfxPath,
    [Parameter(Mandatory = $true)][string]$SiteName,
    [int]$Port = 443,
    # Empty = the binding without a host name (all names on that port).
    [string]$HostHeader = '',
    [string]$IPAddress = '*',
    # Server Name Indication for a new binding with a host header.
    [switch]$Sni,
    [switch]$RemoveOld
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$StorePath = 'Cert:\LocalMachine\My'

function Write-Log([string]$Message) {
    Write-Output ("kvsync-pfx: {0}" -f $Message)
}

function Get-LeafThumbprint([string]$Path) {
    # Get-PfxData (PKI module) reads the PFX without touching a store.
    $data = Get-PfxData -FilePath $Path
    $leaves = @($data.EndEntityCertificates)
    if ($leaves.Count -ne 1) {
        throw "PFX '$Path' has $($leaves.Count) end-entity certificates; expected exactly 1"
    }
    return $leaves[0]
}

function Import-IfMissing([string]$Path, [string]$Thumbprint) {
    $existing = Get-Item -Path (Join-Path $StorePath $Thumbprint) -ErrorAction SilentlyContinue
    if ($existing -and $existing.HasPrivateKey) {
        Write-Log "certificate $Thumbprint already in $StorePath"
        return $existing
    }
    if ($PSCmdlet.ShouldProcess($StorePath, "import $Path")) {
        # Not -Exportable: the private key can't be exported from the store.
        $null = Import-PfxCertificate -FilePath $Path -CertStoreLocation $StorePath
    }
    $imported = Get-Item -Path (Join-Path $StorePath $Thumbprint) -ErrorAction SilentlyContinue
    if (-not $imported -or -not $imported.HasPrivateKey) {
        throw "import of '$Path' did not leave certificate $Thumbprint with its private key in $StorePath (older Windows Server can't read AES-encrypted PFX: write it with 3DES)"
    }
    Write-Log "imported $Thumbprint ($($imported.Subject), expires $($imported.NotAfter.ToString('u')))"
    return $imported
}

function Get-HttpsBinding {
    return Get-WebBinding -Name $SiteName -Protocol https -Port $Port -HostHeader $HostHeader -ErrorAction SilentlyContinue |
        Select-Object -First 1
}

function Set-BindingCertificate([string]$Thumbprint) {
    $binding = Get-HttpsBinding
    if (-not $binding) {
        $sslFlags = 0
        if ($Sni) { $sslFlags = 1 }
        if ($PSCmdlet.ShouldProcess("$SiteName https :$Port $HostHeader", 'create binding')) {
            New-WebBinding -Name $SiteName -Protocol https -Port $Port -IPAddress $IPAddress -HostHeader $HostHeader -SslFlags $sslFlags
        }
        $binding = Get-HttpsBinding
        if (-not $binding) { throw "could not create the https binding of site '$SiteName' on port $Port" }
    }
    $old = [string]$binding.certificateHash
    if ($old -eq $Thumbprint) {
        Write-Log "site '$SiteName' :$Port already uses $Thumbprint; nothing to do"
        return $null
    }
    if ($PSCmdlet.ShouldProcess("$SiteName https :$Port $HostHeader", "bind $Thumbprint")) {
        # AddSslCertificate fails when http.sys already has a certificate for
        # this endpoint, so remove the old one first (a gap of milliseconds).
        if ($old) { $binding.RemoveSslCertificate() }
        $binding.AddSslCertificate($Thumbprint, 'My')
    }
    Write-Log "site '$SiteName' :$Port now uses $Thumbprint (was: $(if ($old) { $old } else { 'none' }))"
    return $old
}

function Remove-OldCertificate([string]$Thumbprint) {
    $stillBound = @(Get-ChildItem IIS:\SslBindings -ErrorAction SilentlyContinue |
            Where-Object { $_.Thumbprint -eq $Thumbprint })
    if ($stillBound.Count -gt 0) {
        Write-Log "keeping ${Thumbprint}: still bound to $($stillBound.Count) other endpoint(s)"
        return
    }
    $path = Join-Path $StorePath $Thumbprint
    if ((Test-Path $path) -and $PSCmdlet.ShouldProcess($path, 'remove old certificate')) {
        Remove-Item -Path $path
        Write-Log "removed old certificate $Thumbprint"
    }
}

try {
    if (-not (Test-Path -LiteralPath $PfxPath -PathType Leaf)) {
        throw "PFX '$PfxPath' not found (has kvsync run? is [[file]] path the same?)"
    }
    Import-Module WebAdministration
    $leaf = Get-LeafThumbprint $PfxPath
    $thumb = $leaf.Thumbprint.ToUpperInvariant()
    $null = Import-IfMissing $PfxPath $thumb
    $old = Set-BindingCertificate $thumb
    if ($RemoveOld -and $old) { Remove-OldCertificate $old }
    exit 0
}
catch {
    Write-Error ("kvsync-pfx: {0}" -f $_.Exception.Message) -ErrorAction Continue
    exit 1
}
