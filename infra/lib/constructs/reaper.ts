/**
 * `Reaper`: the `functions/reaper` Lambda every minute (EventBridge): relaunches queued and
 * lost jobs, times out stuck ones, terminates instances whose job ended or went silent
 * (docs/design-notes.md 3). One sweep at a time (reserved concurrency 1).
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { Deadlines, deadlineEnvironment } from './coordinator-api';
import { JobTable } from './job-table';
import { RustLambda } from './rust-lambda';
import { WorkerFleet } from './worker-fleet';

export interface ReaperProps {
  /** The jobs. */
  readonly table: JobTable;
  /** The workers it relaunches and terminates. */
  readonly fleet: WorkerFleet;
  /** The coordinator's endpoint (written into relaunched workers' user data). */
  readonly apiEndpoint: string;
  /** Deadlines of launching and running jobs. */
  readonly deadlines: Deadlines;
  /** How often it sweeps. @default one minute */
  readonly every?: Duration;
  /** Retention of its logs. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to its logs when the stack is deleted. */
  readonly removalPolicy: RemovalPolicy;
}

/** The reaper and its schedule. */
export class Reaper extends Construct {
  /** The reaper Lambda. */
  public readonly reaper: RustLambda;
  /** Its schedule. */
  public readonly schedule: events.Rule;

  constructor(scope: Construct, id: string, props: ReaperProps) {
    super(scope, id);
    const every = props.every ?? Duration.minutes(1);
    if (every.toSeconds() < 60) {
      throw new Error('Reaper: EventBridge schedules run at most once a minute');
    }
    this.reaper = new RustLambda(this, 'Reaper', {
      binaryName: 'reaper',
      description: 'sweeps stale jobs and orphan worker instances',
      environment: {
        JOB_TABLE: props.table.table.tableName,
        API_ENDPOINT: props.apiEndpoint,
        ...deadlineEnvironment(props.deadlines),
        ...props.fleet.launcherEnvironment(),
      },
      timeout: Duration.seconds(50),
      reservedConcurrentExecutions: 1,
      logRetention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });
    props.table.grantStore(this.reaper.function);
    props.fleet.grantLaunch(this.reaper.function);
    props.fleet.grantTerminate(this.reaper.function);
    this.schedule = new events.Rule(this, 'Schedule', {
      description: 'barge reaper sweep',
      schedule: events.Schedule.rate(every),
      targets: [new targets.LambdaFunction(this.reaper.function, { retryAttempts: 0 })],
    });
  }
}
