-- Rolls back 20250927103131_OrchestraCore: drops the eight core tables, in
-- the order of EF Core's Down() (children before the tables they reference).
-- LOSES every row of OrchestrationLogs, PerformanceMetrics, TaskTemplates,
-- UserPreferences, Tasks, Agents, WorkflowDefinitions and Repositories.
-- Tables and schemas this project did not create (hangfire.*) are never touched.

DROP TABLE "OrchestrationLogs";

DROP TABLE "PerformanceMetrics";

DROP TABLE "TaskTemplates";

DROP TABLE "UserPreferences";

DROP TABLE "Tasks";

DROP TABLE "Agents";

DROP TABLE "WorkflowDefinitions";

DROP TABLE "Repositories";
