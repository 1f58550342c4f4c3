//! Block templates from bitcoind's `getblocktemplate`, in the form the SRI channels take them.
//!
//! SRI pools get templates from a Template Provider; we build the same Template Distribution
//! messages from GBT, as ckpool and public-pool do: `NewTemplate` (BIP34 height as the coinbase
//! prefix, the witness commitment output, the coinbase merkle path) and `SetNewPrevHash` (tip,
//! time, bits). The template keeps its transactions so a found block can be assembled.

use bitcoincore_rpc::json::GetBlockTemplateResult;
use stratum_apps::stratum_core::binary_sv2::{B0255Owned, B064KOwned, Seq0255Owned, U256Owned};
use stratum_apps::stratum_core::bitcoin::blockdata::block::{Header, Version};
use stratum_apps::stratum_core::bitcoin::blockdata::script::Builder;
use stratum_apps::stratum_core::bitcoin::consensus::{deserialize, serialize};
use stratum_apps::stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_apps::stratum_core::bitcoin::{
    Amount, Block, BlockHash, CompactTarget, ScriptBuf, Transaction, TxMerkleNode, TxOut,
};
use stratum_apps::stratum_core::template_distribution_sv2::{
    NewTemplateOwned, SetNewPrevHashOwned,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error(
        "getblocktemplate returned no default_witness_commitment (is the segwit rule requested?)"
    )]
    NoWitnessCommitment,
    #[error("getblocktemplate field {field} is malformed")]
    Malformed { field: &'static str },
    #[error("template transaction {index} does not decode: {reason}")]
    BadTransaction { index: usize, reason: String },
    #[error("too many transactions for a merkle path of 255 levels")]
    TooManyTransactions,
}

/// Why a found block could not be assembled.
#[derive(Debug, Error)]
pub enum BlockAssemblyError {
    #[error("the coinbase from the channel does not decode: {0}")]
    Coinbase(String),
}

/// One template: the messages for the channels and what is needed to rebuild its block.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: u64,
    pub height: u64,
    pub prev_hash: BlockHash,
    pub version: u32,
    pub time: u32,
    pub bits: u32,
    /// The network target, little-endian (Sv2 wire order).
    pub network_target_le: [u8; 32],
    pub coinbase_value: Amount,
    /// The configured payout: the one reward output, worth the whole coinbase value.
    pub reward_outputs: Vec<TxOut>,
    /// `coinbase_tx_outputs` of NewTemplate: the witness commitment.
    pub template_outputs: Vec<TxOut>,
    pub merkle_path: Vec<[u8; 32]>,
    pub transactions: Vec<Transaction>,
}

/// The template's transactions, each decoded (a template bitcoind sent must decode).
fn decode_transactions(gbt: &GetBlockTemplateResult) -> Result<Vec<Transaction>, TemplateError> {
    gbt.transactions
        .iter()
        .enumerate()
        .map(|(index, tx)| {
            deserialize::<Transaction>(&tx.raw_tx).map_err(|error| TemplateError::BadTransaction {
                index,
                reason: error.to_string(),
            })
        })
        .collect()
}

impl Template {
    /// Builds template `id` from a GBT result; the coinbase pays `payout` in full.
    pub fn from_gbt(
        gbt: &GetBlockTemplateResult,
        id: u64,
        payout: ScriptBuf,
    ) -> Result<Self, TemplateError> {
        if gbt.default_witness_commitment.is_empty() {
            return Err(TemplateError::NoWitnessCommitment);
        }
        let bits: [u8; 4] = gbt
            .bits
            .as_slice()
            .try_into()
            .map_err(|_| TemplateError::Malformed { field: "bits" })?;
        let mut network_target_le: [u8; 32] = gbt
            .target
            .as_slice()
            .try_into()
            .map_err(|_| TemplateError::Malformed { field: "target" })?;
        network_target_le.reverse();
        let time = u32::try_from(gbt.current_time)
            .map_err(|_| TemplateError::Malformed { field: "curtime" })?;
        let transactions = decode_transactions(gbt)?;
        let txids: Vec<[u8; 32]> = gbt
            .transactions
            .iter()
            .map(|tx| tx.txid.to_byte_array())
            .collect();
        let merkle_path = coinbase_merkle_path(&txids);
        if merkle_path.len() > 255 {
            return Err(TemplateError::TooManyTransactions);
        }

        Ok(Self {
            id,
            height: gbt.height,
            prev_hash: gbt.previous_block_hash,
            version: gbt.version,
            time,
            bits: u32::from_be_bytes(bits),
            network_target_le,
            coinbase_value: gbt.coinbase_value,
            reward_outputs: vec![TxOut {
                value: gbt.coinbase_value,
                script_pubkey: payout,
            }],
            template_outputs: vec![TxOut {
                value: Amount::ZERO,
                script_pubkey: gbt.default_witness_commitment.clone(),
            }],
            merkle_path,
            transactions,
        })
    }

    /// BIP34: the block height, as the first push of the coinbase scriptSig.
    pub fn coinbase_prefix(&self) -> Vec<u8> {
        Builder::new()
            .push_int(self.height as i64)
            .into_script()
            .into_bytes()
    }

    /// The Template Distribution `NewTemplate` for this template. A `future` template waits for
    /// its `SetNewPrevHash`; a current one is mined on the tip the channels already have.
    pub fn new_template(&self, future: bool) -> NewTemplateOwned {
        let outputs: Vec<u8> = self.template_outputs.iter().flat_map(serialize).collect();
        let path: Vec<U256Owned> = self.merkle_path.iter().map(|node| (*node).into()).collect();
        NewTemplateOwned {
            template_id: self.id,
            future_template: future,
            version: self.version,
            coinbase_tx_version: 2,
            coinbase_prefix: B0255Owned::try_from(self.coinbase_prefix())
                .expect("a BIP34 height push is at most 9 bytes"),
            coinbase_tx_input_sequence: u32::MAX,
            coinbase_tx_value_remaining: self.coinbase_value.to_sat(),
            coinbase_tx_outputs_count: self.template_outputs.len() as u32,
            coinbase_tx_outputs: B064KOwned::try_from(outputs)
                .expect("a witness commitment output fits in 64 KiB"),
            coinbase_tx_locktime: 0,
            merkle_path: Seq0255Owned::new(path).expect("checked: at most 255 levels"),
        }
    }

    /// The Template Distribution `SetNewPrevHash` that makes this template current.
    pub fn set_new_prev_hash(&self) -> SetNewPrevHashOwned {
        SetNewPrevHashOwned {
            template_id: self.id,
            prev_hash: self.prev_hash.to_byte_array().into(),
            header_timestamp: self.time,
            n_bits: self.bits,
            target: self.network_target_le.into(),
        }
    }

    /// The full block for a share that met the network target: the channel's coinbase, this
    /// template's transactions, and the share's header fields.
    pub fn assemble_block(
        &self,
        coinbase: &[u8],
        version: u32,
        time: u32,
        nonce: u32,
    ) -> Result<Block, BlockAssemblyError> {
        let coinbase: Transaction = deserialize(coinbase)
            .map_err(|error| BlockAssemblyError::Coinbase(error.to_string()))?;
        let root =
            merkle_root_with_path(coinbase.compute_txid().to_byte_array(), &self.merkle_path);
        let header = Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: self.prev_hash,
            merkle_root: TxMerkleNode::from_byte_array(root),
            time,
            bits: CompactTarget::from_consensus(self.bits),
            nonce,
        };
        let mut txdata = Vec::with_capacity(self.transactions.len() + 1);
        txdata.push(coinbase);
        txdata.extend(self.transactions.iter().cloned());
        Ok(Block { header, txdata })
    }
}

/// The merkle branch of the coinbase (leaf 0) given the other transactions' txids in block order
/// (internal byte order): at each level, the sibling the coinbase's path is hashed with.
pub fn coinbase_merkle_path(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut path = Vec::new();
    // The coinbase's own hash never enters the branch; any placeholder will do.
    let mut level: Vec<[u8; 32]> = std::iter::once([0u8; 32])
        .chain(txids.iter().copied())
        .collect();
    while level.len() > 1 {
        path.push(level[1]);
        let mut next = vec![[0u8; 32]];
        for pair in level[2..].chunks(2) {
            let right = pair.get(1).unwrap_or(&pair[0]);
            next.push(hash_pair(&pair[0], right));
        }
        level = next;
    }
    path
}

/// The merkle root from a leaf and its branch (the leaf always on the left, as the coinbase is).
pub fn merkle_root_with_path(leaf: [u8; 32], path: &[[u8; 32]]) -> [u8; 32] {
    path.iter()
        .fold(leaf, |node, sibling| hash_pair(&node, sibling))
}

fn hash_pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(left);
    both[32..].copy_from_slice(right);
    sha256d::Hash::hash(&both).to_byte_array()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::stratum_core::bitcoin::merkle_tree;
    use stratum_apps::stratum_core::bitcoin::Txid;

    fn ids(count: usize) -> Vec<[u8; 32]> {
        (0..count)
            .map(|i| sha256d::Hash::hash(&i.to_le_bytes()).to_byte_array())
            .collect()
    }

    #[test]
    fn path_gives_the_same_root_as_the_full_tree() {
        let coinbase = sha256d::Hash::hash(b"coinbase").to_byte_array();
        for others in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 16, 33] {
            let txids = ids(others);
            let all = std::iter::once(coinbase)
                .chain(txids.iter().copied())
                .map(Txid::from_byte_array);
            let expected = merkle_tree::calculate_root(all).unwrap().to_byte_array();
            let path = coinbase_merkle_path(&txids);
            assert_eq!(
                merkle_root_with_path(coinbase, &path),
                expected,
                "{others} txs"
            );
        }
    }

    #[test]
    fn lone_coinbase_has_an_empty_path() {
        assert!(coinbase_merkle_path(&[]).is_empty());
    }
}
