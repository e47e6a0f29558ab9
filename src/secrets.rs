//! Encryption of connection credentials: AES-256-GCM with a random nonce per value and the
//! connection id as associated data, under a key from `QUARRY_SECRET_KEY` or a key file
//! created with mode 0600 in the data dir on first use. There is no built-in key.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::id::ConnectionId;

/// Environment variable holding the base64 of a 32-byte key.
pub const KEY_ENV: &str = "QUARRY_SECRET_KEY";
/// Name of the key file in the data dir.
pub const KEY_FILE: &str = "secret.key";

/// A 256-bit key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct SecretKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(OsRng);
        Self::from_bytes(key.into())
    }

    /// Decodes the base64 of exactly 32 bytes; `origin` names where the text came from.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self> {
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| {
            Error::SecretKey(format!(
                "{origin} is not valid base64; it must be the base64 of 32 random bytes \
                 (generate one with: head -c 32 /dev/urandom | base64)"
            ))
        })?);
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            Error::SecretKey(format!(
                "{origin} decodes to {} bytes, but a key is exactly 32 bytes \
                 (generate one with: head -c 32 /dev/urandom | base64)",
                decoded.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(
            b"quarry key id\0"
                .iter()
                .chain(&bytes)
                .copied()
                .collect::<Vec<_>>(),
        );
        let id = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        SecretKey {
            bytes: Zeroizing::new(bytes),
            id,
        }
    }

    /// A short fingerprint naming this key in messages; reveals nothing of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as base64 text, for writing the key file.
    fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.bytes.as_slice()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey {{ id: {}, bytes: [redacted] }}", self.id)
    }
}

/// One credential as stored: sealed with AES-256-GCM, bound to its connection id.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The config key it belongs to, e.g. `password`.
    pub field: String,
    /// Fingerprint of the key that sealed it.
    pub key_id: String,
    /// The 96-bit nonce, unique per value.
    pub nonce: Vec<u8>,
    /// Ciphertext with the authentication tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("field", &self.field)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Where the key comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A key given directly (by a library user, or read from `QUARRY_SECRET_KEY`).
    Given(SecretKey),
    /// The key file at this path, created on first use.
    File(PathBuf),
}

impl KeySource {
    /// `QUARRY_SECRET_KEY` when set, otherwise the key file in `data_dir`.
    pub fn from_env_or_file(data_dir: &Path) -> Result<Self> {
        match std::env::var(KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                Ok(KeySource::Given(SecretKey::from_base64(&text, KEY_ENV)?))
            }
            _ => Ok(KeySource::File(data_dir.join(KEY_FILE))),
        }
    }

    fn describe(&self) -> String {
        match self {
            KeySource::Given(_) => format!("the given key ({KEY_ENV} or the library's key)"),
            KeySource::File(path) => format!("the key file {}", path.display()),
        }
    }
}

/// Seals and opens connection secrets. The key is loaded (or the key file created) on
/// first use, so a store without secrets never needs one.
#[derive(Debug)]
pub struct SecretCipher {
    source: KeySource,
    key: Mutex<Option<Arc<SecretKey>>>,
}

impl SecretCipher {
    /// A cipher whose key comes from `source`.
    pub fn new(source: KeySource) -> Self {
        SecretCipher {
            source,
            key: Mutex::new(None),
        }
    }

    fn key(&self, create: bool) -> Result<Arc<SecretKey>> {
        let mut slot = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        let key = match &self.source {
            KeySource::Given(key) => key.clone(),
            KeySource::File(path) => load_or_create_key_file(path, create)?,
        };
        let key = Arc::new(key);
        *slot = Some(key.clone());
        Ok(key)
    }

    /// Encrypts `value` of config key `field` for connection `id`.
    pub fn seal(
        &self,
        id: &ConnectionId,
        field: &str,
        value: &SecretString,
    ) -> Result<SealedSecret> {
        let key = self.key(true)?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.bytes.as_slice()));
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.expose_secret().as_bytes(),
                    aad: id.as_str().as_bytes(),
                },
            )
            .map_err(|_| Error::SecretKey("encryption failed".into()))?;
        Ok(SealedSecret {
            field: field.to_owned(),
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Decrypts `sealed`, a secret of connection `id` (named `name` in messages).
    pub fn open(
        &self,
        id: &ConnectionId,
        name: &str,
        sealed: &SealedSecret,
    ) -> Result<SecretString> {
        let fail = |cause: String| Error::SecretDecrypt {
            connection: name.to_owned(),
            id: id.to_string(),
            cause,
        };
        let key = self.key(false).map_err(|e| fail(e.to_string()))?;
        if sealed.nonce.len() != 12 {
            return Err(fail(
                "the stored secret is malformed (bad nonce length)".into(),
            ));
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.bytes.as_slice()));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: id.as_str().as_bytes(),
                },
            )
            .map_err(|_| {
                if sealed.key_id != key.id {
                    fail(format!(
                        "its '{}' was encrypted with key {} but the current key is {} ({}). \
                         Likely cause: {KEY_ENV} or the key file changed since the connection \
                         was created. Restore the original key, or set the credentials again",
                        sealed.field,
                        sealed.key_id,
                        key.id,
                        self.source.describe()
                    ))
                } else {
                    fail(format!(
                        "its '{}' failed authentication although the key matches: the stored \
                         secret was altered or corrupted. Set the credentials again",
                        sealed.field
                    ))
                }
            })?;
        let text = String::from_utf8(plain)
            .map_err(|_| fail("the decrypted secret is not UTF-8 text".into()))?;
        Ok(SecretString::from(text))
    }
}

/// Reads the key file, or creates it (mode 0600, atomically) when `create` is set.
fn load_or_create_key_file(path: &Path, create: bool) -> Result<SecretKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            check_key_file_mode(path)?;
            SecretKey::from_base64(&text, &format!("the key file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => create_key_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::SecretKey(format!(
            "no key: {KEY_ENV} is not set and the key file {} does not exist. Set {KEY_ENV} \
             to the key the secrets were encrypted with, or restore the key file",
            path.display()
        ))),
        Err(e) => Err(Error::io("cannot read the secret key file", path)(e)),
    }
}

fn check_key_file_mode(path: &Path) -> Result<()> {
    let mode = std::fs::metadata(path)
        .map_err(Error::io("cannot read the secret key file", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::SecretKey(format!(
            "the key file {} has mode {:o}, readable by other users; run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

/// Writes a new key to a private temp file, then hard-links it into place so that two
/// processes racing to create the key agree on one, and no reader sees a torn file.
fn create_key_file(path: &Path) -> Result<SecretKey> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io("cannot create the data directory", dir))?;
    let key = SecretKey::generate();
    let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(key.to_base64().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    let result = write().map_err(Error::io("cannot write the secret key file", &tmp));
    let linked = result.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("cannot create the secret key file", path)(e)),
    });
    let _ = std::fs::remove_file(&tmp);
    if linked? {
        tracing::info!(path = %path.display(), "created a new secret key file");
        Ok(key)
    } else {
        load_or_create_key_file(path, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_is_redacted() {
        let key = SecretKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(key.to_base64().as_str()));
    }

    #[test]
    fn seal_open_round_trip_and_nonces_differ() {
        let cipher = SecretCipher::new(KeySource::Given(SecretKey::generate()));
        let id = ConnectionId::generate();
        let secret = SecretString::from("s3cr3t-pässword".to_owned());
        let a = cipher.seal(&id, "password", &secret).unwrap();
        let b = cipher.seal(&id, "password", &secret).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        let opened = cipher.open(&id, "x", &a).unwrap();
        assert_eq!(opened.expose_secret(), "s3cr3t-pässword");
    }

    #[test]
    fn a_secret_is_bound_to_its_connection_id() {
        let cipher = SecretCipher::new(KeySource::Given(SecretKey::generate()));
        let id = ConnectionId::generate();
        let sealed = cipher
            .seal(&id, "password", &SecretString::from("pw".to_owned()))
            .unwrap();
        let other = ConnectionId::generate();
        let msg = cipher
            .open(&other, "other", &sealed)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("altered or corrupted"), "{msg}");
    }

    #[test]
    fn malformed_keys_say_what_a_key_is() {
        let msg = SecretKey::from_base64("not base64!", KEY_ENV)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("QUARRY_SECRET_KEY is not valid base64"),
            "{msg}"
        );
        let short = BASE64.encode([1u8; 16]);
        let msg = SecretKey::from_base64(&short, KEY_ENV)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("decodes to 16 bytes"), "{msg}");
        assert!(msg.contains("exactly 32 bytes"), "{msg}");
    }
}
