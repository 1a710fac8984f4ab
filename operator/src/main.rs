//! `voicebot-operator`: watches `VoiceBot` resources and reconciles them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use voicebot_crds::VoiceBot;
use voicebot_operator::leader::Election;
use voicebot_operator::metrics::Metrics;
use voicebot_operator::reconcile::{self, Capabilities, Context};

#[derive(Parser)]
#[command(
    version,
    about = "Runs VoiceBot resources as Discord shard StatefulSets"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "METRICS_ADDR")]
    metrics_addr: String,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Discord's REST API base (for automatic shard counts).
    #[arg(
        long,
        default_value = "https://discord.com/api/v10",
        env = "DISCORD_API_URL"
    )]
    discord_api: String,
    /// The Lease that lets one replica reconcile at a time (empty: no leader election, for a
    /// single operator run by hand).
    #[arg(long, default_value = "voicebot-operator", env = "LEASE_NAME")]
    lease_name: String,
    /// The Lease's namespace (the operator's own).
    #[arg(long, default_value = "default", env = "POD_NAMESPACE")]
    lease_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Prints the objects the operator would apply for a VoiceBot file (YAML), without a
    /// cluster: a dry run for review and for schema validation.
    Render {
        /// A VoiceBot manifest.
        file: std::path::PathBuf,
        /// Shards per pod and count are taken from the file; a reshard is not simulated.
        #[arg(long, default_value = "default")]
        namespace: String,
    },
}

fn render(file: &std::path::Path, namespace: &str) -> anyhow::Result<()> {
    use kube::Resource;
    use voicebot_operator::render;
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut vb: VoiceBot = serde_yaml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a VoiceBot: {e}", file.display()))?;
    if vb.meta().namespace.is_none() {
        vb.meta_mut().namespace = Some(namespace.to_string());
    }
    // What the operator would refuse is refused here too, every field named.
    if let Err(bad) = vb.spec.validate() {
        let list: Vec<String> = bad.iter().map(|i| format!("  {i}")).collect();
        anyhow::bail!(
            "{}: the spec cannot be run as written:\n{}",
            file.display(),
            list.join("\n")
        );
    }
    let count = vb.spec.shards.count.ok_or_else(|| {
        anyhow::anyhow!("render needs spec.shards.count (the automatic count asks Discord)")
    })?;
    let sharding = voicebot_crds::Sharding::new(count, vb.spec.shards.per_pod);
    for doc in render::documents(&vb, sharding) {
        print!("---\n{}", serde_yaml::to_string(&doc)?);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let Some(Command::Render { file, namespace }) = &args.command {
        return render(file, namespace);
    }
    let client = Client::try_default().await?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(&args.metrics_addr).await?;
    tokio::spawn(voicebot_operator::http::serve(
        listener,
        metrics.clone(),
        ready.clone(),
    ));

    let capabilities = Capabilities::discover(&client).await;
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics,
        capabilities,
        discord_api: args.discord_api.clone(),
        http: reqwest::Client::new(),
        events: Some(Recorder::new(
            client.clone(),
            Reporter {
                controller: "voicebot-operator".into(),
                instance: args.identity.clone(),
            },
        )),
    });
    // Ready means serving: leading, or standing by to lead.
    ready.store(true, Ordering::Relaxed);
    let mut leader = if args.lease_name.is_empty() {
        None
    } else {
        let identity = args.identity.clone().unwrap_or_else(|| {
            format!(
                "voicebot-operator-{}-{}",
                std::process::id(),
                fastrand::u32(..)
            )
        });
        let election = Election::new(
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            Duration::from_secs(15),
        );
        // SIGTERM while standing by: nothing to hand over.
        tokio::select! {
            leader = election.acquire(&client) => Some(leader),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm() => return Ok(()),
        }
    };
    tracing::info!("voicebot-operator running");
    let controller = voicebot_operator::controller(&client, args.namespace.as_deref())
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(name = obj.name, "reconciled"),
                Err(e) => tracing::debug!("reconcile: {e}"),
            }
        });
    let lost = async {
        match leader.as_mut() {
            Some(l) => l.keep().await,
            None => std::future::pending().await,
        }
    };
    let stopped = tokio::select! {
        () = controller => true,
        () = lost => false,
    };
    if !stopped {
        // Another replica may be reconciling already: stop at once; Kubernetes restarts this
        // one as a candidate.
        anyhow::bail!("lost the operator lease; exiting so that one replica reconciles at a time");
    }
    if let Some(l) = leader {
        l.release().await;
    }
    Ok(())
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
