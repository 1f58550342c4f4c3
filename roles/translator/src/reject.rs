//! Why a miner's share was not credited, and how that is told to an Sv1 miner.

use stratum_core::mining_sv2::{
    ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW, ERROR_CODE_SUBMIT_SHARES_DUPLICATE_SHARE,
    ERROR_CODE_SUBMIT_SHARES_INVALID_JOB_ID, ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
};
use stratum_core::sv1_api::client_to_server::SubmitError;

/// A share that is not credited: refused by the pool, or by the translator before it got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareRejection {
    /// The pool's SubmitShares.Error code.
    Pool(String),
    /// The miner has not authorized, or submits for another user.
    UnauthorizedWorker,
    /// The pool is unreachable: there is no channel to send the share on.
    UpstreamUnavailable,
    /// The share is on a channel of an earlier connection to the pool.
    UpstreamReconnected,
    JobNotFound,
    BadExtranonce2Size,
    VersionBitsOutsideMask,
    VersionRollingNotConfigured,
    /// Meets neither the channel target nor the difficulty the miner was told.
    LowDifficulty,
    /// Too many shares waited for the pool's answer; the oldest is given up.
    NoAnswerFromPool,
}

impl ShareRejection {
    /// The code as counted in the share metrics and shown to the miner.
    pub fn code(&self) -> &str {
        match self {
            Self::Pool(code) => code,
            Self::UnauthorizedWorker => "unauthorized-worker",
            Self::UpstreamUnavailable => "upstream-unavailable",
            Self::UpstreamReconnected => "upstream-reconnected",
            Self::JobNotFound => "job-not-found",
            Self::BadExtranonce2Size => "bad-extranonce2-size",
            Self::VersionBitsOutsideMask => "version-bits-outside-mask",
            Self::VersionRollingNotConfigured => "version-rolling-not-configured",
            Self::LowDifficulty => "low-difficulty",
            Self::NoAnswerFromPool => "no-answer-from-pool",
        }
    }

    /// The Sv1 error a miner's firmware understands for this rejection.
    pub fn sv1_error(&self) -> SubmitError {
        match self {
            Self::JobNotFound => SubmitError::JobNotFound,
            Self::LowDifficulty => SubmitError::LowDifficultyShare,
            Self::UnauthorizedWorker => SubmitError::UnauthorizedWorker,
            Self::Pool(code) => match code.as_str() {
                ERROR_CODE_SUBMIT_SHARES_STALE_SHARE | ERROR_CODE_SUBMIT_SHARES_INVALID_JOB_ID => {
                    SubmitError::JobNotFound
                }
                ERROR_CODE_SUBMIT_SHARES_DUPLICATE_SHARE => SubmitError::DuplicateShare,
                ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW => SubmitError::LowDifficultyShare,
                _ => SubmitError::Other,
            },
            _ => SubmitError::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_codes_map_to_the_sv1_errors_firmwares_know() {
        let sv1 = |code: &str| ShareRejection::Pool(code.to_owned()).sv1_error().code();
        assert_eq!(sv1("stale-share"), SubmitError::JobNotFound.code());
        assert_eq!(sv1("invalid-job-id"), SubmitError::JobNotFound.code());
        assert_eq!(sv1("duplicate-share"), SubmitError::DuplicateShare.code());
        assert_eq!(
            sv1("difficulty-too-low"),
            SubmitError::LowDifficultyShare.code()
        );
        assert_eq!(sv1("invalid-share"), SubmitError::Other.code());
    }

    #[test]
    fn the_translators_own_rejections_keep_their_codes() {
        assert_eq!(ShareRejection::LowDifficulty.code(), "low-difficulty");
        assert_eq!(
            ShareRejection::LowDifficulty.sv1_error().code(),
            SubmitError::LowDifficultyShare.code()
        );
        assert_eq!(
            ShareRejection::UpstreamUnavailable.sv1_error().code(),
            SubmitError::Other.code()
        );
    }
}
