//! The bot's Ed25519 device identity, and the device token the gateway issues once an
//! operator has approved (paired) the device.
//!
//! The identity is generated once and persisted (mode 0600) with the device token, so a
//! restarted pod is the same device and needs no new approval. The device id is the SHA-256
//! (hex) of the raw 32-byte public key; the public key and signatures travel as base64url
//! without padding. What is signed is the v3 device-auth payload:
//! `v3|deviceId|clientId|clientMode|role|scopesCSV|signedAtMs|token|nonce|platform|deviceFamily`.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// A device key pair.
pub struct DeviceIdentity {
    key: SigningKey,
    id: String,
    public_key: String,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What the device signs in `connect`.
#[derive(Debug, Clone)]
pub struct AuthPayload<'a> {
    /// `client.id`.
    pub client_id: &'a str,
    /// `client.mode`.
    pub client_mode: &'a str,
    /// `role`.
    pub role: &'a str,
    /// `scopes`.
    pub scopes: &'a [&'a str],
    /// The challenge's `ts`.
    pub signed_at_ms: u64,
    /// `auth.token`, else the device token, else empty.
    pub token: &'a str,
    /// The challenge's nonce.
    pub nonce: &'a str,
    /// `client.platform`.
    pub platform: &'a str,
    /// `client.deviceFamily`.
    pub device_family: &'a str,
}

impl AuthPayload<'_> {
    /// The exact string that is signed.
    pub fn to_signed_string(&self, device_id: &str) -> String {
        let norm = |s: &str| s.trim().to_ascii_lowercase();
        [
            "v3".to_string(),
            device_id.to_string(),
            self.client_id.to_string(),
            self.client_mode.to_string(),
            self.role.to_string(),
            self.scopes.join(","),
            self.signed_at_ms.to_string(),
            self.token.to_string(),
            self.nonce.to_string(),
            norm(self.platform),
            norm(self.device_family),
        ]
        .join("|")
    }
}

impl DeviceIdentity {
    /// A new random identity.
    pub fn generate() -> std::io::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The identity for a 32-byte private seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key().to_bytes();
        Self {
            id: hex(&Sha256::digest(public)),
            public_key: URL_SAFE_NO_PAD.encode(public),
            key,
        }
    }

    /// `device.id`: SHA-256 hex of the public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `device.publicKey`: base64url of the raw public key.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// base64url signature of the connect payload.
    pub fn sign(&self, payload: &AuthPayload<'_>) -> String {
        let message = payload.to_signed_string(&self.id);
        URL_SAFE_NO_PAD.encode(self.key.sign(message.as_bytes()).to_bytes())
    }

    pub(crate) fn seed(&self) -> Secret {
        Secret::new(URL_SAFE_NO_PAD.encode(self.key.to_bytes()))
    }

    /// The private seed itself (to keep the identity elsewhere, e.g. the fleet state).
    pub(crate) fn seed_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the identity and device token live between runs.
pub trait CredentialStore: Send + Sync {
    /// The identity, created and saved on first use.
    fn identity(&self) -> std::io::Result<DeviceIdentity>;
    /// The saved device token, if any.
    fn device_token(&self) -> Option<Secret>;
    /// Saves a device token the gateway issued.
    fn save_device_token(&self, token: &Secret) -> std::io::Result<()>;
}

/// Credentials in a directory: `device.json` (identity + token), mode 0600.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeviceFile {
    version: u32,
    device_id: String,
    public_key: String,
    private_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_token: Option<String>,
}

impl FileStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("device.json")
    }

    fn read(&self) -> std::io::Result<Option<DeviceFile>> {
        match std::fs::read_to_string(self.path()) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a device file: {e}", self.path().display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, file: &DeviceFile) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(".device.json.tmp");
        let mut out = open_private(&tmp)?;
        out.write_all(
            serde_json::to_string_pretty(file)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
        out.sync_all()?;
        std::fs::rename(&tmp, self.path())
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

impl CredentialStore for FileStore {
    fn identity(&self) -> std::io::Result<DeviceIdentity> {
        if let Some(file) = self.read()? {
            let seed = URL_SAFE_NO_PAD
                .decode(&file.private_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{}: the private key is not a 32-byte base64url seed",
                            self.path().display()
                        ),
                    )
                })?;
            return Ok(DeviceIdentity::from_seed(&seed));
        }
        let identity = DeviceIdentity::generate()?;
        self.write(&DeviceFile {
            version: 1,
            device_id: identity.id.clone(),
            public_key: identity.public_key.clone(),
            private_key: identity.seed().expose().to_string(),
            device_token: None,
        })?;
        tracing::info!(device_id = %identity.id, path = %self.path().display(), "created a new device identity");
        Ok(identity)
    }

    fn device_token(&self) -> Option<Secret> {
        self.read().ok().flatten()?.device_token.map(Secret::new)
    }

    fn save_device_token(&self, token: &Secret) -> std::io::Result<()> {
        let mut file = match self.read()? {
            Some(f) => f,
            None => {
                self.identity()?;
                self.read()?.unwrap_or_default()
            }
        };
        file.device_token = Some(token.expose().to_string());
        self.write(&file)
    }
}

/// Credentials kept in memory only (tests, or a pod whose state lives elsewhere).
pub struct MemoryStore {
    seed: [u8; 32],
    token: std::sync::Mutex<Option<Secret>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore(***)")
    }
}

impl MemoryStore {
    /// A store with a fresh random identity.
    pub fn new() -> std::io::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            seed,
            token: std::sync::Mutex::new(None),
        })
    }
}

impl CredentialStore for MemoryStore {
    fn identity(&self) -> std::io::Result<DeviceIdentity> {
        Ok(DeviceIdentity::from_seed(&self.seed))
    }

    fn device_token(&self) -> Option<Secret> {
        self.token.lock().ok()?.clone()
    }

    fn save_device_token(&self, token: &Secret) -> std::io::Result<()> {
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn identity_is_stable_and_signatures_verify() {
        let id = DeviceIdentity::from_seed(&[7; 32]);
        assert_eq!(id.id().len(), 64);
        let payload = AuthPayload {
            client_id: "gateway-client",
            client_mode: "backend",
            role: "operator",
            scopes: &["operator.read", "operator.write"],
            signed_at_ms: 1_700_000_000_000,
            token: "tok",
            nonce: "n1",
            platform: "Linux",
            device_family: "",
        };
        let text = payload.to_signed_string(id.id());
        assert_eq!(
            text,
            format!(
                "v3|{}|gateway-client|backend|operator|operator.read,operator.write|1700000000000|tok|n1|linux|",
                id.id()
            )
        );
        let sig = URL_SAFE_NO_PAD.decode(id.sign(&payload)).unwrap();
        let key = VerifyingKey::from_bytes(
            &URL_SAFE_NO_PAD
                .decode(id.public_key())
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap();
        key.verify(text.as_bytes(), &Signature::from_slice(&sig).unwrap())
            .unwrap();
        assert!(!format!("{id:?}").contains(&URL_SAFE_NO_PAD.encode([7u8; 32])));
    }

    #[test]
    fn file_store_persists_identity_and_token_privately() {
        let dir = std::env::temp_dir().join(format!("voicebot-device-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = FileStore::new(&dir);
        let first = store.identity().unwrap();
        assert!(store.device_token().is_none());
        store.save_device_token(&Secret::new("dt-123")).unwrap();
        let again = FileStore::new(&dir);
        assert_eq!(again.identity().unwrap().id(), first.id());
        assert_eq!(again.device_token().unwrap().expose(), "dt-123");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("device.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join("device.json"), "{garbage").unwrap();
        let err = FileStore::new(&dir).identity().unwrap_err();
        assert!(err.to_string().contains("not a device file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
