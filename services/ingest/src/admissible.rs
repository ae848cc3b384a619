//! Whether a command on an existing payment is possible in the payment's current
//! status, checked before the command is recorded: an impossible one answers 409
//! `state_conflict` and publishes nothing.
//!
//! The current status is the projection's (`payments`, what the REST reads show).
//! The reconciler still decides every recorded command against the newest
//! transition, so a command racing a newer fact is recorded and shows as refused in
//! the timeline. A payment the projection does not hold yet (just created) is not
//! checked here: the reconciler decides.

use paytrack_shared::envelope::CommandAction;
use paytrack_shared::{PaymentId, Status, StatusModel, TenantId};
use sqlx::PgPool;

use crate::error::ApiError;

/// The statuses a retry asks a provider again from: a payment no provider took
/// (`initiated`) or one that failed.
const RETRYABLE: [Status; 2] = [Status::Initiated, Status::Failed];

/// The payment's status in the projection (None: not projected yet, or no such
/// payment in `tenant`).
pub async fn current_status(db: &PgPool, tenant: &TenantId, payment: &PaymentId) -> Result<Option<Status>, ApiError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM payments WHERE tenant = $1 AND payment_id = $2")
            .bind(tenant.as_str())
            .bind(payment.as_str())
            .fetch_optional(db)
            .await?;
    Ok(status.as_deref().and_then(Status::parse))
}

/// Checks `action` against the payment's `current` status with the status model the
/// reconciler enforces.
pub fn check(action: &CommandAction, current: Status, model: &StatusModel) -> Result<(), ApiError> {
    let conflict = |reason: String| ApiError::StateConflict {
        command: action.name().to_owned(),
        status: current.as_str().to_owned(),
        reason,
    };
    match action {
        CommandAction::Create(_) => Ok(()),
        CommandAction::Cancel { .. } => {
            if current == Status::InvestigationRequired {
                return Err(conflict(format!("only an operator's resolve leaves {current}")));
            }
            model
                .check_transition(Some(current), Status::Cancelled)
                .map_err(|e| conflict(e.to_string()))
        }
        CommandAction::Retry { .. } => {
            if RETRYABLE.contains(&current) {
                Ok(())
            } else {
                Err(conflict(
                    "a retry asks a provider again for a payment that is initiated or failed".to_owned(),
                ))
            }
        }
        CommandAction::Resolve { status, .. } => {
            if current != Status::InvestigationRequired {
                return Err(conflict(format!(
                    "only a payment in {} is resolved",
                    Status::InvestigationRequired
                )));
            }
            model
                .check_resolution(current, *status)
                .map_err(|e| conflict(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel() -> CommandAction {
        CommandAction::Cancel { reason: None }
    }

    fn retry() -> CommandAction {
        CommandAction::Retry {
            reason: None,
            routing: None,
        }
    }

    fn resolve(status: Status) -> CommandAction {
        CommandAction::Resolve {
            status,
            reason: "checked".into(),
        }
    }

    fn code(result: Result<(), ApiError>) -> Option<&'static str> {
        result.err().map(|e| e.code())
    }

    #[test]
    fn commands_follow_the_status_model() {
        let model = StatusModel::get();
        assert_eq!(code(check(&cancel(), Status::Initiated, model)), None);
        assert_eq!(code(check(&cancel(), Status::Pending, model)), None);
        for settled in [Status::Succeeded, Status::Failed, Status::Cancelled, Status::Returned] {
            assert_eq!(
                code(check(&cancel(), settled, model)),
                Some("state_conflict"),
                "{settled}"
            );
        }
        assert_eq!(
            code(check(&cancel(), Status::InvestigationRequired, model)),
            Some("state_conflict")
        );
        assert_eq!(code(check(&retry(), Status::Failed, model)), None);
        assert_eq!(code(check(&retry(), Status::Initiated, model)), None);
        assert_eq!(code(check(&retry(), Status::Succeeded, model)), Some("state_conflict"));
        assert_eq!(
            code(check(&resolve(Status::Failed), Status::InvestigationRequired, model)),
            None
        );
        assert_eq!(
            code(check(&resolve(Status::Failed), Status::Pending, model)),
            Some("state_conflict")
        );
    }
}
