//! Discord's part of DAVE (end-to-end encrypted voice, <https://daveprotocol.com>) in a call:
//! the voice gateway is the MLS group's external sender — it proposes adding whoever joins and
//! removing whoever leaves, relays the bot's key package, commit and welcome, and sequences the
//! transitions (prepare → ready → execute). The simulated users are real DAVE members: each is
//! a `davey` session (Discord's DAVE on openmls, the library songbird uses on the bot's side),
//! so the simulator reads the bot's audio only as a member, and the users' audio reaches the bot
//! encrypted for the group. No cryptography is written here: the external sender's proposals are
//! openmls's.
//!
//! Who commits: when the bot joins a call that already has users, they form their group first
//! and one of them commits the bot's addition (the bot joins through a Welcome); afterwards
//! every change (a user comes or goes) is proposed to the bot, which commits it — both paths a
//! Discord client takes.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU16;

use davey::{DaveSession, MediaType, ProposalsOperationType};
use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _, VLBytes};
use openmls::prelude::{
    BasicCredential, Ciphersuite, ExternalProposal, ExternalSender, GroupEpoch, GroupId,
    KeyPackageIn, MlsMessageIn, OpenMlsProvider, ProtocolVersion, SenderExtensionIndex,
    SignatureScheme,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde_json::{Value, json};

/// The DAVE protocol version the simulator speaks.
pub const VERSION: u16 = 1;
/// DAVE v1's MLS ciphersuite.
const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256;
/// The marker that ends every DAVE-encrypted frame.
const MAGIC: [u8; 2] = [0xFA, 0xFA];

/// What the DAVE side of a call did, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaveStats {
    /// The protocol version in force (0: transport encryption only).
    pub version: u16,
    /// The MLS epoch of the call's group (0: no commit yet).
    pub epoch: u64,
    /// Simulated users in the group (the bot not counted).
    pub members: usize,
    /// The bot is a member of the group.
    pub bot_in_group: bool,
    /// Transitions executed (each a new epoch or a version change).
    pub transitions: u32,
    /// The bot's frames a member decrypted.
    pub bot_frames_decrypted: u64,
    /// The bot's frames that came without DAVE while it was in force (not counting silence).
    pub bot_frames_plain: u64,
    /// The bot's DAVE frames no member could decrypt.
    pub bot_frames_refused: u64,
    /// Users' frames sent end-to-end encrypted.
    pub user_frames_encrypted: u64,
    /// Commits or welcomes the bot reported it could not process (op 31).
    pub invalid_commit_welcomes: u32,
}

/// A message to the bot's voice WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// `{"op": N, "d": …}`.
    Json(u8, Value),
    /// A binary frame: `[opcode][payload]` (voice gateway v4: no sequence number).
    Binary(Vec<u8>),
}

/// A membership change waiting its turn (one transition at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Join(u64),
    Leave(u64),
}

/// What the call waits for from the bot.
enum Waiting {
    /// Its commit (op 28) to proposals it was sent.
    Commit {
        change: Change,
        /// The joining user's session (its key package was proposed).
        joiner: Option<Box<DaveSession>>,
    },
    /// Its readiness (op 23) for a transition.
    Ready { transition: u16, version: u16 },
}

/// The DAVE state of one call.
pub(crate) struct DaveCall {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    external_sender: Vec<u8>,
    channel: u64,
    bot: u64,
    version: u16,
    /// Users in the group.
    users: BTreeMap<u64, DaveSession>,
    /// Users who left, their sessions kept (they must not read what follows).
    former: BTreeMap<u64, DaveSession>,
    bot_in_group: bool,
    epoch: u64,
    next_transition: u16,
    waiting: Option<Waiting>,
    queue: VecDeque<Change>,
    /// The bot's latest DAVE frame and the epoch it came in.
    last_bot_frame: Option<(u64, Vec<u8>)>,
    /// The end-to-end encrypted frames each user sent, with the epoch (the latest 500).
    sent: BTreeMap<u64, VecDeque<(u64, Vec<u8>)>>,
    stats: DaveStats,
}

fn session(user: u64, channel: u64) -> Result<DaveSession, String> {
    let version = NonZeroU16::new(VERSION).ok_or("DAVE version 0")?;
    DaveSession::new(version, user, channel, None).map_err(|e| format!("DAVE session: {e:?}"))
}

impl DaveCall {
    /// A call in `channel` with the bot `bot`; the simulator is its external sender.
    pub(crate) fn new(channel: u64, bot: u64) -> Result<Self, String> {
        let signer = SignatureKeyPair::new(SignatureScheme::ECDSA_SECP256R1_SHA256)
            .map_err(|e| format!("external sender key: {e:?}"))?;
        let credential = BasicCredential::new(b"discord-sim voice gateway".to_vec());
        let external_sender = ExternalSender::new(signer.public().into(), credential.into())
            .tls_serialize_detached()
            .map_err(|e| format!("external sender: {e}"))?;
        Ok(Self {
            provider: OpenMlsRustCrypto::default(),
            signer,
            external_sender,
            channel,
            bot,
            version: VERSION,
            users: BTreeMap::new(),
            former: BTreeMap::new(),
            bot_in_group: false,
            epoch: 0,
            next_transition: 1,
            waiting: None,
            queue: VecDeque::new(),
            last_bot_frame: None,
            sent: BTreeMap::new(),
            stats: DaveStats::default(),
        })
    }

    pub(crate) fn stats(&self) -> DaveStats {
        DaveStats {
            version: self.version,
            epoch: self.epoch,
            members: self.users.len(),
            bot_in_group: self.bot_in_group,
            ..self.stats
        }
    }

    /// Whether `user` is in the group and no transition is under way.
    pub(crate) fn settled_member(&self, user: u64) -> bool {
        self.version == 0
            || (self.users.contains_key(&user) && self.waiting.is_none() && self.queue.is_empty())
    }

    fn transition(&mut self) -> u16 {
        let t = self.next_transition;
        self.next_transition = self.next_transition.wrapping_add(1).max(1);
        t
    }

    /// Right after the session description: who is in the channel (op 11) and the external
    /// sender (op 25). The users already there form their group now.
    pub(crate) fn start(&mut self, users: &[u64]) -> Result<Vec<Out>, String> {
        let mut users: Vec<u64> = users.iter().copied().filter(|u| *u != self.bot).collect();
        users.sort_unstable();
        users.dedup();
        if let Some((&first, rest)) = users.split_first() {
            let mut founder = session(first, self.channel)?;
            founder
                .set_external_sender(&self.external_sender)
                .map_err(|e| format!("external sender: {e:?}"))?;
            let mut joiners = Vec::new();
            let mut proposals = Vec::new();
            for &u in rest {
                let mut s = session(u, self.channel)?;
                s.set_external_sender(&self.external_sender)
                    .map_err(|e| format!("external sender: {e:?}"))?;
                let kp = s
                    .create_key_package()
                    .map_err(|e| format!("key package: {e:?}"))?;
                proposals.push(self.propose_add(&kp)?);
                joiners.push((u, s));
            }
            self.users.insert(first, founder);
            if !proposals.is_empty() {
                let bundle = bundle(&proposals)?;
                let founder = self.users.get_mut(&first).ok_or("founder")?;
                let cw = founder
                    .process_proposals(ProposalsOperationType::APPEND, &bundle, None)
                    .map_err(|e| format!("proposals: {e:?}"))?
                    .ok_or("the founder made no commit")?;
                founder
                    .process_commit(&cw.commit)
                    .map_err(|e| format!("commit: {e:?}"))?;
                let welcome = cw.welcome.ok_or("no welcome for the joiners")?;
                for (u, mut s) in joiners {
                    s.process_welcome(&welcome)
                        .map_err(|e| format!("welcome: {e:?}"))?;
                    self.users.insert(u, s);
                }
                self.epoch += 1;
            }
        }
        let ids: Vec<String> = users.iter().map(u64::to_string).collect();
        let mut out = vec![Out::Json(11, json!({ "user_ids": ids }))];
        let mut sender = vec![25];
        sender.extend_from_slice(&self.external_sender);
        out.push(Out::Binary(sender));
        Ok(out)
    }

    fn propose_add(&self, key_package: &[u8]) -> Result<Vec<u8>, String> {
        let kp = KeyPackageIn::tls_deserialize_exact_bytes(key_package)
            .map_err(|e| format!("key package: {e}"))?
            .validate(self.provider.crypto(), ProtocolVersion::Mls10)
            .map_err(|e| format!("key package: {e:?}"))?;
        if kp.ciphersuite() != CIPHERSUITE {
            return Err(format!("key package for {:?}", kp.ciphersuite()));
        }
        wire(
            "add proposal",
            ExternalProposal::new_add::<OpenMlsRustCrypto>(
                kp,
                self.group_id(),
                GroupEpoch::from(self.epoch),
                &self.signer,
                SenderExtensionIndex::new(0),
            ),
        )
    }

    fn group_id(&self) -> GroupId {
        GroupId::from_slice(&self.channel.to_be_bytes())
    }

    /// The bot's key package (op 26): it joins the users' group through a Welcome that one of
    /// them commits; alone, its own pending group is the call's.
    pub(crate) fn on_key_package(&mut self, key_package: &[u8]) -> Result<Vec<Out>, String> {
        if self.bot_in_group {
            return Err("the bot sent a key package while in the group".into());
        }
        let Some(&committer) = self.users.keys().next() else {
            self.bot_in_group = true;
            return Ok(self.pump());
        };
        let bundle = bundle(&[self.propose_add(key_package)?])?;
        let mut commit = None;
        for (u, s) in &mut self.users {
            let cw = s
                .process_proposals(ProposalsOperationType::APPEND, &bundle, None)
                .map_err(|e| format!("proposals at {u}: {e:?}"))?;
            if *u == committer {
                commit = cw;
            }
        }
        let cw = commit.ok_or("the committer made no commit")?;
        for (u, s) in &mut self.users {
            s.process_commit(&cw.commit)
                .map_err(|e| format!("commit at {u}: {e:?}"))?;
        }
        self.epoch += 1;
        self.bot_in_group = true;
        let transition = self.transition();
        self.waiting = Some(Waiting::Ready {
            transition,
            version: self.version,
        });
        let mut welcome = vec![30];
        welcome.extend_from_slice(&transition.to_be_bytes());
        welcome.extend_from_slice(&cw.welcome.ok_or("no welcome for the bot")?);
        Ok(vec![Out::Binary(welcome)])
    }

    /// A user joins (`Some`) or leaves (`None`) the bot's channel; applied in turn.
    pub(crate) fn user_moved(&mut self, user: u64, joined: bool) -> Vec<Out> {
        if user == self.bot {
            return Vec::new();
        }
        let change = if joined {
            Change::Join(user)
        } else {
            Change::Leave(user)
        };
        if !self.queue.contains(&change) {
            self.queue.push_back(change);
        }
        self.pump()
    }

    /// Starts the next queued change when nothing is under way.
    fn pump(&mut self) -> Vec<Out> {
        while self.waiting.is_none() && self.bot_in_group && self.version != 0 {
            let Some(change) = self.queue.pop_front() else {
                break;
            };
            match self.propose(change) {
                Ok(Some(out)) => return out,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, ?change, "dave: a membership change failed"),
            }
        }
        Vec::new()
    }

    fn propose(&mut self, change: Change) -> Result<Option<Vec<Out>>, String> {
        let (proposal, joiner, recognise) = match change {
            Change::Join(u) => {
                if self.users.contains_key(&u) {
                    return Ok(None);
                }
                let mut s = session(u, self.channel)?;
                s.set_external_sender(&self.external_sender)
                    .map_err(|e| format!("external sender: {e:?}"))?;
                let kp = s
                    .create_key_package()
                    .map_err(|e| format!("key package: {e:?}"))?;
                (self.propose_add(&kp)?, Some(Box::new(s)), Some(u))
            }
            Change::Leave(u) => {
                let Some(leaf) = self.users.get(&u).and_then(DaveSession::own_leaf_index) else {
                    return Ok(None);
                };
                let remove = wire(
                    "remove proposal",
                    ExternalProposal::new_remove::<OpenMlsRustCrypto>(
                        leaf,
                        self.group_id(),
                        GroupEpoch::from(self.epoch),
                        &self.signer,
                        SenderExtensionIndex::new(0),
                    ),
                )?;
                (remove, None, None)
            }
        };
        let bundle = bundle(&[proposal])?;
        // The other members keep the proposal, to read the bot's commit (by reference).
        for (u, s) in &mut self.users {
            if change == Change::Leave(*u) {
                continue;
            }
            s.process_proposals(ProposalsOperationType::APPEND, &bundle, None)
                .map_err(|e| format!("proposals at {u}: {e:?}"))?;
        }
        self.waiting = Some(Waiting::Commit { change, joiner });
        let mut out = Vec::new();
        if let Some(u) = recognise {
            // The bot commits only users it knows are in the channel.
            out.push(Out::Json(11, json!({ "user_ids": [u.to_string()] })));
        }
        let mut proposals = vec![27, ProposalsOperationType::APPEND as u8];
        proposals.extend_from_slice(&bundle);
        out.push(Out::Binary(proposals));
        Ok(Some(out))
    }

    /// The bot's commit and welcome (op 28): the members move to the next epoch, a joiner is
    /// welcomed, and the bot is told its commit won (op 29).
    pub(crate) fn on_commit_welcome(&mut self, data: &[u8]) -> Result<Vec<Out>, String> {
        let Some(Waiting::Commit { change, joiner }) = self.waiting.take() else {
            return Err("a commit nobody asked for".into());
        };
        let (message, rest) =
            MlsMessageIn::tls_deserialize_bytes(data).map_err(|e| format!("commit: {e}"))?;
        let commit = &data[..data.len() - rest.len()];
        drop(message);
        if let Change::Leave(u) = change
            && let Some(s) = self.users.remove(&u)
        {
            self.former.insert(u, s);
        }
        for (u, s) in &mut self.users {
            s.process_commit(commit)
                .map_err(|e| format!("commit at {u}: {e:?}"))?;
        }
        if let (Change::Join(u), Some(mut s)) = (change, joiner) {
            if rest.is_empty() {
                return Err("a commit adding a member without a welcome".into());
            }
            s.process_welcome(rest)
                .map_err(|e| format!("welcome at {u}: {e:?}"))?;
            self.users.insert(u, *s);
        }
        self.epoch += 1;
        let transition = self.transition();
        self.waiting = Some(Waiting::Ready {
            transition,
            version: self.version,
        });
        let mut announce = vec![29];
        announce.extend_from_slice(&transition.to_be_bytes());
        announce.extend_from_slice(commit);
        Ok(vec![Out::Binary(announce)])
    }

    /// The bot is ready for a transition (op 23): execute it (op 22), then the next change.
    pub(crate) fn on_ready(&mut self, transition: u16) -> Vec<Out> {
        match self.waiting {
            Some(Waiting::Ready {
                transition: t,
                version,
            }) if t == transition => {
                self.waiting = None;
                self.version = version;
                self.stats.transitions += 1;
                let mut out = vec![Out::Json(22, json!({ "transition_id": transition }))];
                out.extend(self.pump());
                out
            }
            _ => Vec::new(),
        }
    }

    /// The bot could not process a commit or welcome (op 31).
    pub(crate) fn on_invalid(&mut self) {
        self.stats.invalid_commit_welcomes += 1;
    }

    /// A client without DAVE joined: the call goes back to transport encryption only (op 21
    /// with version 0, then op 22 once the bot is ready).
    pub(crate) fn downgrade(&mut self) -> Result<Vec<Out>, String> {
        if self.waiting.is_some() {
            return Err("a transition is under way".into());
        }
        let transition = self.transition();
        self.waiting = Some(Waiting::Ready {
            transition,
            version: 0,
        });
        Ok(vec![Out::Json(
            21,
            json!({ "protocol_version": 0, "transition_id": transition }),
        )])
    }

    /// A user's Opus frame as it goes on the wire: end-to-end encrypted while DAVE is in force.
    pub(crate) fn user_frame(&mut self, user: u64, opus: &[u8]) -> Vec<u8> {
        if self.version == 0 {
            return opus.to_vec();
        }
        match self.users.get_mut(&user) {
            Some(s) if s.is_ready() => match s.encrypt_opus(opus) {
                Ok(frame) => {
                    let frame = frame.into_owned();
                    if frame != opus {
                        self.stats.user_frames_encrypted += 1;
                        let sent = self.sent.entry(user).or_default();
                        if sent.len() >= 500 {
                            sent.pop_front();
                        }
                        sent.push_back((self.epoch, frame.clone()));
                    }
                    frame
                }
                Err(e) => {
                    tracing::warn!(user, error = ?e, "dave: a user's frame did not encrypt");
                    opus.to_vec()
                }
            },
            _ => opus.to_vec(),
        }
    }

    /// The bot's frame (after transport decryption) as a member hears it: the Opus inside a
    /// DAVE frame, or a plain frame. `None`: no member could read it.
    pub(crate) fn bot_frame(&mut self, payload: Vec<u8>) -> Option<Vec<u8>> {
        if !is_dave_frame(&payload) {
            if self.version != 0 && self.bot_in_group && self.epoch > 0 {
                self.stats.bot_frames_plain += 1;
            }
            return Some(payload);
        }
        let opus = self.read_bot_frame(&payload);
        self.last_bot_frame = Some((self.epoch, payload));
        opus
    }

    /// A member decrypts one of the bot's DAVE frames (counted either way).
    fn read_bot_frame(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let bot = self.bot;
        let reader = self.users.values_mut().find(|s| s.is_ready());
        match reader.map(|s| s.decrypt(bot, MediaType::AUDIO, payload)) {
            Some(Ok(opus)) => {
                self.stats.bot_frames_decrypted += 1;
                Some(opus)
            }
            Some(Err(e)) => {
                self.stats.bot_frames_refused += 1;
                tracing::debug!(error = ?e, "dave: a bot frame did not decrypt");
                None
            }
            None => {
                self.stats.bot_frames_refused += 1;
                None
            }
        }
    }

    /// The bot's latest frame, if it came under an earlier epoch, heard again by the members
    /// (a replay across a transition): `Some(true)` when they refuse it (counted in
    /// `bot_frames_refused`), `None` when there is no such frame.
    pub(crate) fn replay_stale_bot_frame(&mut self) -> Option<bool> {
        let (epoch, frame) = self.last_bot_frame.clone()?;
        if epoch >= self.epoch {
            return None;
        }
        let refused_before = self.stats.bot_frames_refused;
        let heard = self.read_bot_frame(&frame);
        Some(heard.is_none() && self.stats.bot_frames_refused > refused_before)
    }

    /// The frames `user` sent under epochs before the current one.
    pub(crate) fn stale_frames(&self, user: u64) -> Vec<Vec<u8>> {
        self.sent
            .get(&user)
            .map(|s| {
                s.iter()
                    .filter(|(e, _)| *e < self.epoch)
                    .map(|(_, f)| f.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `user` (a member, or one who left) can decrypt the bot's latest DAVE frame.
    pub(crate) fn can_read_latest(&mut self, user: u64) -> Option<bool> {
        let (_, frame) = self.last_bot_frame.clone()?;
        let bot = self.bot;
        let s = match self.users.get_mut(&user) {
            Some(s) => s,
            None => self.former.get_mut(&user)?,
        };
        Some(s.decrypt(bot, MediaType::AUDIO, &frame).is_ok())
    }
}

/// An MLS message the external sender made, serialised for the wire.
fn wire<E: std::fmt::Debug>(
    what: &str,
    message: Result<openmls::prelude::MlsMessageOut, E>,
) -> Result<Vec<u8>, String> {
    message
        .map_err(|e| format!("{what}: {e:?}"))?
        .tls_serialize_detached()
        .map_err(|e| format!("{what}: {e}"))
}

/// Proposals as op 27 carries them: one TLS vector of concatenated MLS messages.
fn bundle(proposals: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    VLBytes::new(proposals.concat())
        .tls_serialize_detached()
        .map_err(|e| format!("proposals: {e}"))
}

/// Whether a frame that went through `DaveCall::user_frame`/songbird is end-to-end encrypted.
pub fn is_dave_frame(payload: &[u8]) -> bool {
    payload.len() >= 11 && payload.ends_with(&MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: u64 = 42;
    const BOT: u64 = 7;

    /// The bot's side, played by a davey session as songbird does it.
    fn bot() -> DaveSession {
        session(BOT, CHANNEL).unwrap()
    }

    fn binary(out: &[Out], op: u8) -> Vec<u8> {
        out.iter()
            .find_map(|o| match o {
                Out::Binary(b) if b[0] == op => Some(b[1..].to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no op {op} in {out:?}"))
    }

    #[test]
    fn users_and_the_bot_share_one_group_through_joins_and_leaves() {
        let mut call = DaveCall::new(CHANNEL, BOT).unwrap();
        let mut bot = bot();
        // Ann and Bob are in the call; the bot joins through a welcome.
        let out = call.start(&[1, 2]).unwrap();
        bot.set_external_sender(&binary(&out, 25)).unwrap();
        let kp = bot.create_key_package().unwrap();
        let out = call.on_key_package(&kp).unwrap();
        let welcome = binary(&out, 30);
        bot.process_welcome(&welcome[2..]).unwrap();
        let t = u16::from_be_bytes([welcome[0], welcome[1]]);
        assert!(matches!(call.on_ready(t).as_slice(), [Out::Json(22, _)]));
        assert_eq!(call.stats().epoch, 2);
        assert!(call.settled_member(1) && call.settled_member(2));
        // Ann's frame reaches the bot encrypted, and the bot reads it.
        let frame = call.user_frame(1, &[0x78, 1, 2, 3, 4, 5]);
        assert!(is_dave_frame(&frame));
        assert_eq!(
            bot.decrypt(1, MediaType::AUDIO, &frame).unwrap(),
            [0x78, 1, 2, 3, 4, 5]
        );
        // Cy joins: the bot commits; Bob leaves: the bot commits.
        for (user, joined) in [(3, true), (2, false)] {
            let out = call.user_moved(user, joined);
            let proposals = binary(&out, 27);
            let cw = bot
                .process_proposals(ProposalsOperationType::APPEND, &proposals[1..], None)
                .unwrap()
                .unwrap();
            let mut data = cw.commit.clone();
            data.extend(cw.welcome.unwrap_or_default());
            let out = call.on_commit_welcome(&data).unwrap();
            let announce = binary(&out, 29);
            bot.process_commit(&announce[2..]).unwrap();
            call.on_ready(u16::from_be_bytes([announce[0], announce[1]]));
        }
        assert_eq!(call.stats().epoch, 4);
        assert_eq!(call.stats().members, 2);
        // The bot's frame: members read it, Bob (gone) does not, nor does an outsider.
        let sent = bot.encrypt_opus(&[0x78, 9, 9, 9]).unwrap().into_owned();
        assert_eq!(call.bot_frame(sent.clone()), Some(vec![0x78, 9, 9, 9]));
        assert_eq!(call.can_read_latest(2), Some(false));
        let mut outsider = session(99, CHANNEL).unwrap();
        assert!(outsider.decrypt(BOT, MediaType::AUDIO, &sent).is_err());
        // A downgrade: after the bot is ready, frames go plain.
        let out = call.downgrade().unwrap();
        let Out::Json(21, d) = &out[0] else {
            panic!("{out:?}")
        };
        call.on_ready(d["transition_id"].as_u64().unwrap() as u16);
        assert_eq!(call.stats().version, 0);
        assert_eq!(call.user_frame(1, &[0x78, 1]), [0x78, 1]);
    }

    #[test]
    fn a_bot_alone_commits_the_first_user() {
        let mut call = DaveCall::new(CHANNEL, BOT).unwrap();
        let mut bot = bot();
        let out = call.start(&[]).unwrap();
        bot.set_external_sender(&binary(&out, 25)).unwrap();
        let kp = bot.create_key_package().unwrap();
        assert!(call.on_key_package(&kp).unwrap().is_empty());
        let out = call.user_moved(1, true);
        assert!(matches!(&out[0], Out::Json(11, _)), "recognised first");
        let proposals = binary(&out, 27);
        let cw = bot
            .process_proposals(ProposalsOperationType::APPEND, &proposals[1..], None)
            .unwrap()
            .unwrap();
        let mut data = cw.commit.clone();
        data.extend(cw.welcome.unwrap());
        let announce = binary(&call.on_commit_welcome(&data).unwrap(), 29);
        bot.process_commit(&announce[2..]).unwrap();
        assert!(bot.is_ready());
        assert!(!call.settled_member(1), "not before the transition runs");
        call.on_ready(u16::from_be_bytes([announce[0], announce[1]]));
        assert!(call.settled_member(1));
        // Garbage from the bot is an error, not a panic.
        assert!(call.on_commit_welcome(&[1, 2, 3]).is_err());
        assert!(call.on_key_package(&[0; 8]).is_err());
    }
}
