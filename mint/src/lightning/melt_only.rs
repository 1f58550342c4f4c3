//! The Lightning node as the mint's `sat` processor for melts only.
//!
//! Sats enter this mint only as payouts for mined work, so the node never issues an invoice for a
//! NUT-04 mint quote: a pool's mint is not a deposit service. Everything else (melt quotes,
//! payments, their status) is cdk-ldk-node's.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use cdk::nuts::CurrencyUnit;
use cdk_common::payment::{
    self, CreateIncomingPaymentResponse, Event, IncomingPaymentOptions, MakePaymentResponse,
    MintPayment, OutgoingPaymentOptions, PaymentIdentifier, PaymentQuoteResponse, SettingsResponse,
    WaitPaymentResponse,
};
use cdk_ldk_node::CdkLdkNode;
use futures::Stream;

pub struct MeltOnly(pub Arc<CdkLdkNode>);

#[async_trait]
impl MintPayment for MeltOnly {
    type Err = payment::Error;

    async fn start(&self) -> Result<(), Self::Err> {
        self.0.start().await
    }

    async fn stop(&self) -> Result<(), Self::Err> {
        self.0.stop().await
    }

    async fn get_settings(&self) -> Result<SettingsResponse, Self::Err> {
        self.0.get_settings().await
    }

    async fn create_incoming_payment_request(
        &self,
        _options: IncomingPaymentOptions,
    ) -> Result<CreateIncomingPaymentResponse, Self::Err> {
        Err(payment::Error::UnsupportedPaymentOption)
    }

    async fn get_payment_quote(
        &self,
        unit: &CurrencyUnit,
        options: OutgoingPaymentOptions,
    ) -> Result<PaymentQuoteResponse, Self::Err> {
        self.0.get_payment_quote(unit, options).await
    }

    async fn make_payment(
        &self,
        unit: &CurrencyUnit,
        options: OutgoingPaymentOptions,
    ) -> Result<MakePaymentResponse, Self::Err> {
        self.0.make_payment(unit, options).await
    }

    async fn wait_payment_event(
        &self,
    ) -> Result<Pin<Box<dyn Stream<Item = Event> + Send>>, Self::Err> {
        self.0.wait_payment_event().await
    }

    fn is_payment_event_stream_active(&self) -> bool {
        self.0.is_payment_event_stream_active()
    }

    fn cancel_payment_event_stream(&self) {
        self.0.cancel_payment_event_stream()
    }

    async fn check_incoming_payment_status(
        &self,
        _payment_identifier: &PaymentIdentifier,
    ) -> Result<Vec<WaitPaymentResponse>, Self::Err> {
        // No mint quote is ever backed by an invoice of this node.
        Ok(Vec::new())
    }

    async fn check_outgoing_payment(
        &self,
        payment_identifier: &PaymentIdentifier,
    ) -> Result<MakePaymentResponse, Self::Err> {
        self.0.check_outgoing_payment(payment_identifier).await
    }
}
