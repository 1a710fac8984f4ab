//! The OpenClaw device identity of the fleet, kept in the fleet state: the adapter between
//! the client's [`CredentialStore`] and [`FleetState`]'s stored device (neither knows the
//! other).

use std::sync::{Arc, Mutex};

use crate::lock;
use crate::openclaw::device::{CredentialStore, DeviceIdentity, MemoryStore};
use crate::secret::Secret;
use crate::state::{FleetState, StateError};

/// The fleet's one device identity (one pairing approval for every pod of the bot): from
/// Redis, created there by the first pod; in memory when the state has no Redis.
pub async fn fleet_credentials(state: &FleetState) -> Result<Arc<dyn CredentialStore>, StateError> {
    let unreachable = |e: std::io::Error| StateError::Unreachable(e.to_string());
    let fresh = DeviceIdentity::generate().map_err(unreachable)?;
    match state.device(&fresh.seed_bytes()).await? {
        None => Ok(Arc::new(MemoryStore::new().map_err(unreachable)?)),
        Some(device) => {
            let identity = DeviceIdentity::from_seed(&device.seed);
            tracing::info!(device_id = %identity.id(), "OpenClaw device identity from Redis");
            Ok(Arc::new(StateCredentials {
                state: state.clone(),
                seed: device.seed,
                token: Mutex::new(device.token),
            }))
        }
    }
}

/// OpenClaw credentials kept in the fleet state.
struct StateCredentials {
    state: FleetState,
    seed: [u8; 32],
    token: Mutex<Option<Secret>>,
}

impl CredentialStore for StateCredentials {
    fn identity(&self) -> std::io::Result<DeviceIdentity> {
        Ok(DeviceIdentity::from_seed(&self.seed))
    }

    fn device_token(&self) -> Option<Secret> {
        lock(&self.token).clone()
    }

    fn save_device_token(&self, token: &Secret) -> std::io::Result<()> {
        *lock(&self.token) = Some(token.clone());
        self.state.save_device_token(token);
        Ok(())
    }
}
