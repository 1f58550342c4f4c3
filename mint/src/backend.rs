//! The payment processor behind unit `hash`: there is nothing to pay. Quotes come only from the
//! pool through the stream and are marked PAID by the consumer, so this backend refuses every
//! request a wallet could make of a payment processor and reports no payments of its own.

use std::collections::HashMap;
use std::pin::Pin;

use async_trait::async_trait;
use cdk::nuts::CurrencyUnit;
use cdk_common::payment::{
    CreateIncomingPaymentResponse, Error as PaymentError, Event, IncomingPaymentOptions,
    MakePaymentResponse, MintPayment, OutgoingPaymentOptions, PaymentIdentifier,
    PaymentQuoteResponse, SettingsResponse, WaitPaymentResponse,
};
use futures::Stream;

/// Why `POST /v1/mint/quote/ehash` can never succeed.
pub const HTTP_QUOTES_REFUSED: &str =
    "ehash quotes are created by the pool for accepted shares; they cannot be requested over HTTP";

#[derive(Debug, Default, Clone)]
pub struct EhashPayments;

#[async_trait]
impl MintPayment for EhashPayments {
    type Err = PaymentError;

    async fn get_settings(&self) -> Result<SettingsResponse, Self::Err> {
        Ok(SettingsResponse {
            unit: ehash::UNIT.to_owned(),
            bolt11: None,
            bolt12: None,
            onchain: None,
            custom: HashMap::from([(ehash::PAYMENT_METHOD.to_owned(), "{}".to_owned())]),
        })
    }

    async fn create_incoming_payment_request(
        &self,
        _options: IncomingPaymentOptions,
    ) -> Result<CreateIncomingPaymentResponse, Self::Err> {
        Err(PaymentError::Custom(HTTP_QUOTES_REFUSED.to_owned()))
    }

    async fn get_payment_quote(
        &self,
        _unit: &CurrencyUnit,
        _options: OutgoingPaymentOptions,
    ) -> Result<PaymentQuoteResponse, Self::Err> {
        Err(PaymentError::UnsupportedPaymentOption)
    }

    async fn make_payment(
        &self,
        _unit: &CurrencyUnit,
        _options: OutgoingPaymentOptions,
    ) -> Result<MakePaymentResponse, Self::Err> {
        Err(PaymentError::UnsupportedPaymentOption)
    }

    async fn wait_payment_event(
        &self,
    ) -> Result<Pin<Box<dyn Stream<Item = Event> + Send>>, Self::Err> {
        // Payments arrive through the quote stream, never through this processor.
        Ok(Box::pin(futures::stream::pending()))
    }

    fn is_payment_event_stream_active(&self) -> bool {
        false
    }

    fn cancel_payment_event_stream(&self) {}

    async fn check_incoming_payment_status(
        &self,
        _payment_identifier: &PaymentIdentifier,
    ) -> Result<Vec<WaitPaymentResponse>, Self::Err> {
        // cdk asks on every quote lookup and mint; the answer is in the store already.
        Ok(Vec::new())
    }

    async fn check_outgoing_payment(
        &self,
        _payment_identifier: &PaymentIdentifier,
    ) -> Result<MakePaymentResponse, Self::Err> {
        Err(PaymentError::UnknownPaymentState)
    }
}
