defmodule Python.Channel do
  @moduledoc """
  Channels: Elixir data fed into running Python code, over `:py_channel`.

  A channel is a queue that processes send terms into and Python code
  receives from while it runs. Pass it to Python as an argument (or in
  `locals`): there it is an `erlang.Channel` with `receive(timeout=None)`,
  `try_receive()`, `await ch.async_receive()`, and sync and async iteration
  that ends when the channel is closed. A byte channel (`type: :bytes`)
  takes binaries and is a readable binary file in Python (`read`,
  `readline`, lines; `text()` for a text file), so `json.load(ch)` parses a
  body as it arrives.

      {:ok, ch} = Python.Channel.new()
      spawn(fn -> Enum.each(1..3, &Python.Channel.send(ch, &1)); Python.Channel.close(ch) end)
      {:ok, 6} = Python.eval("sum(ch)", %{ch: ch})

  The channel ends cleanly with `close/1`, and with an error
  (`erlang.ChannelClosed` in Python) when the process that made it exits.
  See docs/channels.md.
  """

  @typedoc "A channel (a reference)."
  @type t :: reference()

  @doc """
  A new channel. Options: `max_size:` (the most messages queued, for a
  byte channel the most bytes; default `:infinity`), `type:` (`:term`, the
  default, or `:bytes`) and `owner:` (the process whose exit ends the
  channel with an error; default the caller).
  """
  @spec new(max_size: pos_integer() | :infinity, type: :term | :bytes, owner: pid()) :: {:ok, t()}
  def new(opts \\ []) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "Python.Channel.new: options must be a keyword list, got: #{inspect(opts)}"
    end

    case :py_channel.new(Map.new(opts)) do
      {:ok, ch} ->
        {:ok, ch}

      {:error, {:badarg, what}} ->
        raise ArgumentError, "Python.Channel.new: bad #{what}: #{inspect(opts)}"
    end
  end

  @doc """
  Queues a term for Python; never blocks. `{:error, :full}` when a bounded
  channel is full (nothing queued), `{:error, :closed}` after `close/1` or
  the owner's exit, `{:error, {:badarg, :data}}` for a non-binary on a byte
  channel.
  """
  @spec send(t(), term()) :: :ok | {:error, :full | :closed | {:badarg, :data}}
  def send(ch, term), do: :py_channel.send(ch, term)

  @doc "Closes the channel: Python receives what is queued, then the end."
  @spec close(t()) :: :ok
  def close(ch), do: :py_channel.close(ch)

  @doc "The channel's counters: `size`, `bytes`, `max_size`, `closed`, `type`, `sent`, `received`, `waiting`."
  @spec info(t()) :: map()
  def info(ch), do: :py_channel.info(ch)
end
