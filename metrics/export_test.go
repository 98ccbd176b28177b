package metrics

// RequireTool is requireTool for the tests in package metrics_test.
var RequireTool = requireTool
