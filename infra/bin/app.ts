/**
 * The CDK app entry (`cdk.json`): `cdk deploy --all -c stage=prod`. The stage defaults to
 * `dev` (or `BARGE_STAGE`); `infra/stages/<stage>.json`, when present, overrides its
 * defaults (network, instance types, limits; see infra/lib/config.ts). Every stack is
 * checked by cdk-nag's AwsSolutions pack on synth.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { BargeChecks } from '../lib/nag';
import { APP_CONTEXT, addStage } from '../lib/app';
import { overridesFromJson, stageConfig } from '../lib/config';

// BARGE_SYNTH_ONLY=1 synthesizes the templates without building the Lambdas (the offline
// checks of `make test`); deploys always build them.
const app = new App({
  context: APP_CONTEXT,
  postCliContext: process.env.BARGE_SYNTH_ONLY === '1' ? { 'aws:cdk:bundling-stacks': [] } : undefined,
});
const stage = String(app.node.tryGetContext('stage') ?? process.env.BARGE_STAGE ?? 'dev');
const file = path.join(__dirname, '..', 'stages', `${stage}.json`);
let overrides = {};
if (fs.existsSync(file)) {
  overrides = overridesFromJson(JSON.parse(fs.readFileSync(file, 'utf8')), path.relative(process.cwd(), file));
}
addStage(app, stageConfig(stage, overrides));
Validations.of(app).addPlugins(new BargeChecks(app));
app.synth();
