//! The `VoiceBot` custom resource.
//!
//! The Rust types (kube derive + schemars) and the generated `crds/*.yaml` arrive with the
//! operator work; this crate already holds the group and version every part of the fleet
//! agrees on, so the shard, the operator and the chart name them from one place.

/// API group of the `VoiceBot` resource.
pub const GROUP: &str = "voicebot.dev";
/// API version served.
pub const VERSION: &str = "v1alpha1";
/// Kind.
pub const KIND: &str = "VoiceBot";

/// `group/version`, as in an object's `apiVersion`.
pub fn api_version() -> String {
    format!("{GROUP}/{VERSION}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_version_is_group_slash_version() {
        assert_eq!(super::api_version(), "voicebot.dev/v1alpha1");
    }
}
