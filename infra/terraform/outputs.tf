output "identity_client_id" {
  description = "Client id of the job's managed identity (TELEMETRY_HUNT_CLIENT_ID in the job)."
  value       = azurerm_user_assigned_identity.job.client_id
}

output "identity_principal_id" {
  description = "Principal id of the job's managed identity: grant it AcrPull on a private registry."
  value       = azurerm_user_assigned_identity.job.principal_id
}

output "storage_account_name" {
  value = azurerm_storage_account.results.name
}

output "results_container_url" {
  value = local.results_container
}

output "ingestion_endpoint" {
  description = "Logs Ingestion endpoint of the data collection endpoint."
  value       = azurerm_monitor_data_collection_endpoint.ingestion.logs_ingestion_endpoint
}

output "data_collection_rule_immutable_id" {
  value = azurerm_monitor_data_collection_rule.results.immutable_id
}

output "job_name" {
  description = "Run it once by hand: az containerapp job start -g <resource group> -n <job_name>."
  value       = azurerm_container_app_job.hunt.name
}

output "workbook_id" {
  value = azurerm_application_insights_workbook.telemetry.id
}
